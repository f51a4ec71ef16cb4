"""Keys: list, accept, reject, delete, finger, and one-time join tokens."""

from __future__ import annotations

import math

from saltmarsh.pki.keys import encode_public_key
from saltmarsh.pki.keystore import KeyState
from saltmarsh.protocol.bounds import MAX_TOKEN_TTL

from .errors import Invalid, NotFound
from .registry import ServiceContext, operation
from .types.keys import (
    JoinToken,
    KeyAcceptRequest,
    KeyDeleteRequest,
    KeyFingerRequest,
    KeyList,
    KeyListRequest,
    KeyRejectRequest,
    TokenRequest,
)


@operation(KeyListRequest)
async def key_list(ctx: ServiceContext, req: KeyListRequest) -> KeyList:
    """Ids by key state."""
    store = ctx.master.keys.store
    return KeyList(store.ids(KeyState.ACCEPTED), store.ids(KeyState.PENDING), store.ids(KeyState.REJECTED))


@operation(KeyAcceptRequest)
async def accept(ctx: ServiceContext, req: KeyAcceptRequest) -> list[str]:
    """Accept one key (id) or every pending key (all=true); returns the ids accepted."""
    ids = ctx.master.keys.pending() if req.all else [_one(req.id)]
    return await ctx.master.keys.accept(ids)


@operation(KeyRejectRequest)
async def reject(ctx: ServiceContext, req: KeyRejectRequest) -> str:
    """Reject a key; an accepted agent stops receiving jobs from the next one on."""
    await ctx.master.keys.reject(_one(req.id))
    return req.id


@operation(KeyDeleteRequest)
async def delete(ctx: ServiceContext, req: KeyDeleteRequest) -> str:
    """Delete a key; an accepted agent stops receiving jobs from the next one on."""
    await ctx.master.keys.delete(_one(req.id))
    return req.id


@operation(TokenRequest)
async def token(ctx: ServiceContext, req: TokenRequest) -> JoinToken:
    """Issue a one-time join token that gets agent ``id``'s key accepted on first contact.

    ``ttl`` is more than 0 and at most MAX_TOKEN_TTL seconds: a token that is born expired,
    or outlives every plan to use it (or, NaN, never expires), is refused.
    """
    if not (math.isfinite(req.ttl) and 0 < req.ttl <= MAX_TOKEN_TTL):
        raise Invalid(f"a join token's ttl must be more than 0 and at most {MAX_TOKEN_TTL:.0f} s "
                      f"({MAX_TOKEN_TTL / 86400:g} days), not {req.ttl:g}")
    issued, expires = ctx.master.keys.issue_token(req.id, req.ttl)
    return JoinToken(req.id, issued, expires, encode_public_key(ctx.master.identity.public_key))


@operation(KeyFingerRequest)
async def finger(ctx: ServiceContext, req: KeyFingerRequest) -> dict[str, str]:
    """Fingerprints: of one agent's key (id), or of the master and every agent."""
    store = ctx.master.keys.store
    if req.id:
        record = store.get(req.id)
        if record is None:
            raise NotFound(f"no key for agent {req.id!r}")
        return {record.agent_id: record.fingerprint}
    prints = {"master": ctx.master.identity.fingerprint}
    prints.update({k.agent_id: k.fingerprint for k in store.all()})
    return prints


def _one(agent_id: str) -> str:
    if not agent_id:
        raise Invalid("an agent id is required")
    return agent_id
