"""Events that agents fire, relayed onto the master's bus once each, after a check of their tags.

An agent may send a batch twice: its Ack was lost, or the batch waited in this master's
socket while the master was stopped and the agent, having given up on it, spooled it and sent
it again. Each event carries an id, ascending in its agent's stream (agent/spool.py), and the
relay keeps per agent EventMarks: a watermark (every id up to it was relayed) and the few ids
above it relayed out of order. Each batch's ``floor``, the lowest id the agent may still
send, lifts the watermark past ids the agent acknowledged or gave up (dropped at a bound, lost
in a crash), so the set above holds about the batches in flight; MAX_ABOVE bounds it for an
agent that misbehaves. A duplicate is acknowledged and not relayed.

The marks are written to the job cache before the Ack, so a restarted master still knows what
it relayed. An event relayed just before a master crash, whose marks were not written yet,
comes once more (at least once there; exactly once otherwise). Events without an id (seq 0)
are relayed as they come.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from saltmarsh.protocol.errors import MalformedFrame
from saltmarsh.protocol.messages import Ack, AgentEvent, Events
from saltmarsh.protocol.tags import agent_tag_fault

from ..events.bus import EventBus
from ..store.jobcache import JobCache
from ..wire.request_channel import Request
from .presence import Presence

log = logging.getLogger(__name__)

MAX_ABOVE = 10_000  # ids above the mark kept per agent; an agent in good order needs about its batches in flight


@dataclass
class EventMarks:
    """Which ids of one agent's event stream were relayed: all up to ``mark``, and those in ``above``."""

    stream: int
    mark: int = 0
    above: set[int] = field(default_factory=set)

    def admit(self, events: list[AgentEvent], floor: int) -> list[AgentEvent]:
        """The events not relayed before, now marked as relayed; ids below ``floor`` count as done."""
        if floor - 1 > self.mark:
            self.mark = floor - 1
            self.above = {seq for seq in self.above if seq > self.mark}
        mark, above = self.mark, self.above
        if not above and events and events[0].seq == mark + 1 and events[-1].seq == mark + len(events):
            # The usual batch: the next run of ids. Its ends are trusted to stand for the run
            # (an agent that lied would only get its own events dropped or repeated).
            self.mark = events[-1].seq
            return events
        fresh: list[AgentEvent] = []
        for event in events:
            seq = event.seq
            if seq == 0:
                fresh.append(event)  # no id: it cannot be recognised if it comes again
                continue
            if seq <= mark or seq in above:
                continue
            if seq == mark + 1:
                mark = seq
                while above and mark + 1 in above:
                    above.remove(mark + 1)
                    mark += 1
            else:
                above.add(seq)
            fresh.append(event)
        self.mark = mark
        return fresh

    def trim(self) -> bool:
        """Keep ``above`` within MAX_ABOVE by counting its lower half as relayed; True if it had to."""
        if len(self.above) <= MAX_ABOVE:
            return False
        ordered = sorted(self.above)
        self.mark = ordered[len(ordered) // 2]
        self.above = set(ordered[len(ordered) // 2 + 1:])
        return True


class AgentEventRelay:
    """Puts an agent's batch of events on the bus once each, refusing tags it may not fire."""

    def __init__(self, bus: EventBus, presence: Presence, cache: JobCache) -> None:
        self._bus = bus
        self._presence = presence
        self._cache = cache
        self._marks: dict[str, EventMarks] = {}
        self.refused = 0
        self.duplicates = 0

    async def on_events(self, req: Request) -> Ack:
        """Relay a batch, record its ids, then Ack; duplicates and foreign tags are dropped and logged."""
        assert isinstance(req.body, Events)
        body = req.body
        self._presence.seen(req.agent_id, req.routing_id)
        events = body.events
        marks = self._marks_of(req.agent_id, body.stream) if body.stream else None
        if marks is not None:
            events = marks.admit(body.events, body.floor)
            if marks.trim():
                log.warning("events of %s arrive far out of order: ids up to %d now count as relayed",
                            req.agent_id, marks.mark)
        if len(events) < len(body.events):
            self.duplicates += len(body.events) - len(events)
            log.info("dropped %d events from %s that were relayed before (sent again after a lost Ack)",
                     len(body.events) - len(events), req.agent_id)
        for event in events:
            # Each event is judged alone: one bad tag costs only itself, never the rest of its batch.
            fault = agent_tag_fault(req.agent_id, event.tag)
            if fault:
                self.refused += 1
                log.warning("refused event from %s: tag %r: %s", req.agent_id, event.tag, fault)
            else:
                self._bus.fire(event.tag, event.data, agent=req.agent_id, ts=event.ts or None)
        if marks is not None:  # after relaying (a crash between the two repeats events rather than losing them)
            self._cache.save_event_marks(req.agent_id, marks.stream, marks.mark, sorted(marks.above))
        # Let the loop turn once per batch: while agents keep the request socket full its
        # receives complete without waiting, and nothing else (control commands, the
        # batched sends to subscribers) would run until the burst is over.
        await asyncio.sleep(0)
        return Ack()

    def _marks_of(self, agent_id: str, stream: int) -> EventMarks:
        marks = self._marks.get(agent_id) or self._stored_marks(agent_id)
        if marks is None or marks.stream != stream:
            if marks is not None:
                log.info("agent %s started a new event stream (its spool was made anew)", agent_id)
            marks = EventMarks(stream)
        self._marks[agent_id] = marks
        return marks

    def _stored_marks(self, agent_id: str) -> EventMarks | None:
        try:
            stored = self._cache.event_marks(agent_id)
        except MalformedFrame as exc:
            log.error("stored event marks of %s are unreadable (%s): starting them again", agent_id, exc)
            return None
        if stored is None:
            return None
        stream, mark, above = stored
        return EventMarks(stream, mark, set(above))
