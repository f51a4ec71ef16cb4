"""Event commands: subscribe the client to tags matching a pattern; ping."""

from __future__ import annotations

from typing import Any

import msgspec

from saltmarsh.protocol.tags import pattern_fault

from ..errors import CommandError
from . import CommandContext, command, parse_args


class SubscribeArgs(msgspec.Struct, forbid_unknown_fields=True):
    """A tag pattern: a prefix, or a glob over the whole tag; empty for everything."""

    pattern: str = ""


@command("events.subscribe")
async def subscribe(ctx: CommandContext, args: dict[str, Any]) -> str:
    """Stream every event whose tag matches ``pattern`` to this client until it goes away.

    A pattern no tag could match (a control character, longer than any tag) is refused:
    the subscriber would wait for ever, for nothing.
    """
    pattern = parse_args(args, SubscribeArgs).pattern
    fault = pattern_fault(pattern)
    if fault:
        raise CommandError(fault)
    ctx.subscribe(pattern, None)
    return pattern


class StreamArgs(msgspec.Struct, forbid_unknown_fields=True):
    """The request id whose event stream the client is done with."""

    id: int


@command("stream.end")
async def end_stream(ctx: CommandContext, args: dict[str, Any]) -> None:
    """End this client's event stream of an earlier request (a run's returns, a subscription)."""
    ctx.end_stream(parse_args(args, StreamArgs).id)


@command("master.ping")
async def ping(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Is the master up? Returns its fingerprint and counters."""
    master = ctx.master
    return {"fingerprint": master.identity.fingerprint, "events": master.bus.published,
            "rejected_frames": master.channel.rejected, "requests": dict(master.channel.handled),
            "subscriptions": master.bus.subscriptions, "up": len(master.presence.up_agents()),
            "resync": master.resync.status()}
