"""API tokens: ``token.create``, ``token.list``, ``token.revoke`` (the store: master/http/tokens.py)."""

from __future__ import annotations

import logging

from ..http.scopes import ScopeError, parse_scopes
from ..http.tokens import ApiToken
from .errors import Invalid
from .registry import ServiceContext, operation
from .types.tokens import TokenCreated, TokenCreateRequest, TokenInfo, TokenListRequest, TokenRevokeRequest

log = logging.getLogger(__name__)


def _info(record: ApiToken) -> TokenInfo:
    return TokenInfo(name=record.name, scopes=list(record.scopes), target=record.target, created=record.created,
                     expires=record.expires)


@operation(TokenCreateRequest)
async def token_create(ctx: ServiceContext, req: TokenCreateRequest) -> TokenCreated:
    """A new token with ``scopes``; Invalid for an unknown scope or a bad name, Conflict if the name is taken."""
    try:
        scopes = parse_scopes(req.scopes)
    except ScopeError as exc:
        raise Invalid(str(exc)) from exc
    token, record = ctx.master.api_tokens.create(req.name, scopes, req.target, req.ttl)
    log.info("API token %s created (scopes %s, target %s)", record.name, ",".join(scopes), record.target or "any")
    return TokenCreated(token=token, info=_info(record))


@operation(TokenListRequest)
async def token_list(ctx: ServiceContext, req: TokenListRequest) -> list[TokenInfo]:
    """Every API token, by name."""
    return [_info(record) for record in ctx.master.api_tokens.list()]


@operation(TokenRevokeRequest)
async def token_revoke(ctx: ServiceContext, req: TokenRevokeRequest) -> TokenInfo:
    """Revoke a token by name; NotFound if there is none."""
    record = ctx.master.api_tokens.revoke(req.name)
    log.info("API token %s revoked", record.name)
    return _info(record)
