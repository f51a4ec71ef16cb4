"""What every API handler shares: the one JSON answer and error shape, and one way to check a token.

One response shape for every answer: the result as JSON on success, ``{"error": {"code", "message"}}``
otherwise; 401 without a valid token (with the reason, and ``WWW-Authenticate``), 403 naming the scope
the token lacks. Never a traceback: a bug is logged and answered 500.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import tornado.web

from .tokens import ApiToken, ApiTokens, Unauthenticated

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than success, decided by the front end itself (auth, routing, body)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class JsonHandler(tornado.web.RequestHandler):
    """Every answer as JSON, errors included, and every call logged with its token's name."""

    token_name = "-"

    def set_default_headers(self) -> None:
        """JSON, never cached, never sniffed."""
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def answer(self, status: int, document: Any) -> None:
        """Send ``document`` (msgspec Structs allowed) with ``status``."""
        self.set_status(status)
        self.finish(msgspec.json.encode(document))

    def fail(self, status: int, code: str, message: str) -> None:
        """The one error shape."""
        self.answer(status, {"error": {"code": code, "message": message}})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """tornado's own errors (an unknown path, a body over the bound, an uncaught bug) in the one shape."""
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 400: "invalid"}
        message = self._reason if status_code != 500 else "internal error (logged on the master)"
        self.finish(msgspec.json.encode({"error": {"code": codes.get(status_code, "internal"), "message": message}}))


def authorize(handler: tornado.web.RequestHandler, tokens: ApiTokens, scope: str) -> ApiToken:
    """The request's token, if it holds ``scope`` ("": any valid token); ApiError 401 (logged, with the
    reason) or 403 otherwise."""
    try:
        token = tokens.authenticate(handler.request.headers.get("Authorization"))
    except Unauthenticated as exc:
        log.warning("http: %s %s refused: %s", handler.request.method, handler.request.path, exc)
        handler.set_header("WWW-Authenticate", 'Bearer realm="saltmarsh"')
        raise ApiError(401, "unauthenticated", str(exc)) from exc
    if scope and scope not in token.scopes:
        raise ApiError(403, "forbidden", f"token {token.name} lacks the scope {scope}")
    return token
