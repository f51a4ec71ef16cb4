"""A test client of the master's HTTP API: real HTTP on its loopback port (urllib), tokens made with the CLI."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .cluster import Cluster


class Api:
    """The master's API at ``url``."""

    def __init__(self, cluster: Cluster, port: int) -> None:
        self.cluster, self.url = cluster, f"http://127.0.0.1:{port}"

    def token(self, name: str, scopes: str, *extra: str) -> str:
        """A new token, made with the CLI; the token is the first line it prints."""
        return self.cluster.cli("token", "create", name, "--scope", scopes, *extra).stdout.splitlines()[0]

    def call(self, method: str, path: str, token: str | None = None, body: bytes | Any = None,
             timeout: float = 30.0) -> tuple[int, Any, Any]:
        """(status, decoded JSON, headers: case-insensitive) of one request."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read()), response.headers
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read()), exc.headers


def error_of(document: Any) -> tuple[str, str]:
    """(code, message) of the one error shape; fails on anything else."""
    assert set(document) == {"error"} and set(document["error"]) == {"code", "message"}, document
    return document["error"]["code"], document["error"]["message"]
