"""API tokens (master/http/tokens.py): token.create, token.list, token.revoke (master/service/tokens.py)."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from . import Request

# The longest a token may live: a year. Without --ttl a token lives until it is revoked.
MAX_TOKEN_TTL = 366 * 86400.0


class TokenCreateRequest(Request, frozen=True):
    """A new API token: its name, its scopes (``jobs:run,vms:read``), a target pattern it may reach, its lifetime."""

    command: ClassVar[str] = "token.create"
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    scopes: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    target: Annotated[str, msgspec.Meta(max_length=255)] = ""
    ttl: Annotated[float, msgspec.Meta(gt=0, le=MAX_TOKEN_TTL)] | None = None


class TokenListRequest(Request, frozen=True):
    """Every API token (never the tokens themselves)."""

    command: ClassVar[str] = "token.list"


class TokenRevokeRequest(Request, frozen=True):
    """Revoke the API token ``name``: refused from the next request on."""

    command: ClassVar[str] = "token.revoke"
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One API token as stored: name, scopes, target pattern ("" for any), created and expiry (epoch seconds)."""

    name: str
    scopes: list[str]
    target: str
    created: float
    expires: float | None


class TokenCreated(msgspec.Struct, frozen=True, kw_only=True):
    """A new token: ``token`` is shown this once; the master keeps only its hash."""

    token: str
    info: TokenInfo
