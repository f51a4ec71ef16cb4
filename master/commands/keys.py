"""Key commands: list, accept, reject, delete, finger."""

from __future__ import annotations

import math
from typing import Any

import msgspec

from saltmarsh.pki.keys import encode_public_key
from saltmarsh.pki.keystore import KeyState
from saltmarsh.protocol.bounds import MAX_TOKEN_TTL

from ..errors import CommandError
from . import CommandContext, command, parse_args


class KeyArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Arguments naming one key (or, for accept, every pending key)."""

    id: str = ""
    all: bool = False


@command("key.list")
async def key_list(ctx: CommandContext, args: dict[str, Any]) -> dict[str, list[str]]:
    """Ids by state: {"accepted": [...], "pending": [...], "rejected": [...]}."""
    store = ctx.master.keys.store
    return {state.value: store.ids(state) for state in (KeyState.ACCEPTED, KeyState.PENDING, KeyState.REJECTED)}


@command("key.accept")
async def key_accept(ctx: CommandContext, args: dict[str, Any]) -> list[str]:
    """Accept one key (id) or every pending key (all=true); returns the ids accepted."""
    parsed = parse_args(args, KeyArgs)
    ids = ctx.master.keys.pending() if parsed.all else [_one(parsed)]
    return await ctx.master.keys.accept(ids)


@command("key.reject")
async def key_reject(ctx: CommandContext, args: dict[str, Any]) -> str:
    """Reject a key; an accepted agent stops receiving jobs from the next one on."""
    agent_id = _one(parse_args(args, KeyArgs))
    await ctx.master.keys.reject(agent_id)
    return agent_id


@command("key.delete")
async def key_delete(ctx: CommandContext, args: dict[str, Any]) -> str:
    """Delete a key; an accepted agent stops receiving jobs from the next one on."""
    agent_id = _one(parse_args(args, KeyArgs))
    await ctx.master.keys.delete(agent_id)
    return agent_id


class TokenArgs(msgspec.Struct, forbid_unknown_fields=True):
    """The agent a join token is for, and how long it stays valid."""

    id: str
    ttl: float = 3600.0


@command("key.token")
async def key_token(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Issue a one-time join token that gets agent ``id``'s key accepted on first contact.

    ``ttl`` is more than 0 and at most MAX_TOKEN_TTL seconds: a token that is born expired,
    or outlives every plan to use it (or, NaN, never expires), is refused.
    """
    parsed = parse_args(args, TokenArgs)
    if not (math.isfinite(parsed.ttl) and 0 < parsed.ttl <= MAX_TOKEN_TTL):
        raise CommandError(f"a join token's ttl must be more than 0 and at most {MAX_TOKEN_TTL:.0f} s "
                           f"({MAX_TOKEN_TTL / 86400:g} days), not {parsed.ttl:g}")
    token, expires = ctx.master.keys.issue_token(parsed.id, parsed.ttl)
    return {"id": parsed.id, "token": token, "expires": expires,
            "master_key": encode_public_key(ctx.master.identity.public_key)}


@command("key.finger")
async def key_finger(ctx: CommandContext, args: dict[str, Any]) -> dict[str, str]:
    """Fingerprints: of one agent's key (id), or of the master and every agent."""
    parsed = parse_args(args, KeyArgs)
    store = ctx.master.keys.store
    if parsed.id:
        record = store.get(parsed.id)
        if record is None:
            raise CommandError(f"no key for agent {parsed.id!r}")
        return {record.agent_id: record.fingerprint}
    prints = {"master": ctx.master.identity.fingerprint}
    prints.update({k.agent_id: k.fingerprint for k in store.all()})
    return prints


def _one(args: KeyArgs) -> str:
    if not args.id:
        raise CommandError("an agent id is required")
    return args.id
