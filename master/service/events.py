"""Events and the master itself: subscribe to tags matching a pattern; ping."""

from __future__ import annotations

from typing import Any

from saltmarsh.protocol.tags import pattern_fault

from .errors import Invalid
from .registry import ServiceContext, operation
from .types.events import PingRequest, SubscribeRequest


@operation(SubscribeRequest)
async def subscribe(ctx: ServiceContext, req: SubscribeRequest) -> str:
    """Stream every event whose tag matches ``pattern`` to the caller until it goes away.

    A pattern no tag could match (a control character, longer than any tag) is Invalid:
    the subscriber would wait for ever, for nothing.
    """
    fault = pattern_fault(req.pattern)
    if fault:
        raise Invalid(fault)
    ctx.watch(req.pattern, None)
    return req.pattern


@operation(PingRequest)
async def ping(ctx: ServiceContext, req: PingRequest) -> dict[str, Any]:
    """Is the master up? Returns its fingerprint and counters."""
    master = ctx.master
    return {"fingerprint": master.identity.fingerprint, "events": master.bus.published,
            "rejected_frames": master.channel.rejected, "requests": dict(master.channel.handled),
            "subscriptions": master.bus.subscriptions, "up": len(master.presence.up_agents()),
            "resync": master.resync.status()}
