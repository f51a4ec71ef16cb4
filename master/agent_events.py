"""Events that agents fire, relayed onto the master's bus after a check of their tags."""

from __future__ import annotations

import asyncio
import logging

from saltmarsh.protocol.messages import Ack, Events
from saltmarsh.protocol.tags import agent_may_fire

from .eventbus import EventBus
from .presence import Presence
from .request_channel import Request

log = logging.getLogger(__name__)


class AgentEventRelay:
    """Puts an agent's batch of events on the bus, refusing tags it may not fire."""

    def __init__(self, bus: EventBus, presence: Presence) -> None:
        self._bus = bus
        self._presence = presence
        self.refused = 0

    async def on_events(self, req: Request) -> Ack:
        """Relay a batch; events under another agent's or the master's tags are dropped and logged."""
        assert isinstance(req.body, Events)
        self._presence.seen(req.agent_id, req.routing_id)
        for event in req.body.events:
            if agent_may_fire(req.agent_id, event.tag):
                self._bus.fire(event.tag, event.data, agent=req.agent_id, ts=event.ts or None)
            else:
                self.refused += 1
                log.warning("refused event from %s: tag %r is not one it may fire", req.agent_id, event.tag)
        # Let the loop turn once per batch: while agents keep the request socket full its
        # receives complete without waiting, and nothing else (control commands, the
        # batched sends to subscribers) would run until the burst is over.
        await asyncio.sleep(0)
        return Ack()
