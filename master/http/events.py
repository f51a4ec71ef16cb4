"""Events for the API: a numbered, bounded ring of the bus's events, and one bounded queue per subscriber.

Every event the bus fires gets the next sequence number and is kept ``event_ring_seconds`` (and at
most ``event_ring_events`` of them: master/http/settings.py), so a client that reconnects with
``since=SEQ`` gets what it missed, or, when that is older than the ring, a ``gap`` message saying
from where it resumes. Each subscriber has its own queue (saltstack/salt#35798 shared one stream
among clients): every subscriber gets every event that matches it. A queue over ``event_backlog``
(a client that does not read) cuts that subscriber off with the reason; the master and the other
subscribers never wait for it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable

import msgspec

from saltmarsh.protocol.tags import tag_matches

from ..events.bus import Event, EventBus
from .tokens import ApiToken

MAX_PATTERNS = 32

# The scope each family of tags needs beside events:read: a token sees only what it may read elsewhere.
TAG_SCOPES = {"saltmarsh/job/": "jobs:read", "saltmarsh/batch/": "jobs:read", "saltmarsh/key/": "keys:read",
              "saltmarsh/agent/": "agents:read", "saltmarsh/virt/": "vms:read", "saltmarsh/host/": "vms:read",
              "saltmarsh/pki/": "pki:read"}


def visible(token: ApiToken, tag: str, agent: str) -> bool:
    """Whether ``token`` may see an event of ``tag`` from ``agent``: its family's scope, its target pattern."""
    for prefix, scope in TAG_SCOPES.items():
        if tag.startswith(prefix):
            if scope not in token.scopes:
                return False
            break
    if token.target:
        return bool(agent) and token.may_reach(agent)
    return True


class Numbered(msgspec.Struct, gc=False):
    """An event as the ring keeps it: its sequence number, what subscribers match on, and its JSON text,
    ``{"seq", "tag", "data", "ts", "agent"}``, made once for every subscriber that gets it.

    Kept out of the garbage collector's sight (``gc=False``: strings, ints and a dict of ints to
    bools, which can form no cycle): holding each event's data as objects, a ring of tens of
    thousands of events made every full collection stop the master's loop for 50-70 ms, the tail
    of the delivery latency.
    """

    seq: int
    tag: str
    agent: str
    text: str
    # Whether each subscriber view (EventRing.view) wants it: subscribers that share a view (every
    # browser tab of one console) match an event once between them, not once each.
    wanted: dict[int, bool]

    @classmethod
    def of(cls, seq: int, event: Event) -> Numbered:
        """``event`` numbered ``seq``, its JSON made now."""
        text = msgspec.json.encode({"seq": seq, "tag": event.tag, "data": event.data, "ts": event.ts,
                                    "agent": event.agent}).decode()
        return cls(seq, event.tag, event.agent or "", text, {})

    def json(self) -> str:
        """The event as the API sends it."""
        return self.text


class EventRing:
    """Numbers every event of ``bus`` and keeps the recent ones; fans them out to live subscribers."""

    def __init__(self, bus: EventBus, seconds: float, max_events: int) -> None:
        self._seconds = seconds
        self._ring: collections.deque[tuple[float, Numbered]] = collections.deque(maxlen=max_events)
        self._listeners: set[Callable[[Numbered], None]] = set()
        self.seq = 0
        self._handle = bus.subscribe("", self._on_event)
        self._bus = bus
        self._views: dict[tuple[object, ...], int] = {}

    def view(self, token: ApiToken, patterns: tuple[str, ...]) -> int:
        """The number of a subscriber view: what decides which events it gets (its patterns, its token's
        scopes and target). Subscribers with the same view get the same events."""
        return self._views.setdefault((patterns, token.scopes, token.target), len(self._views))

    def close(self) -> None:
        """Stop numbering."""
        self._bus.unsubscribe(self._handle)

    def _on_event(self, event: Event) -> None:
        self.seq += 1
        numbered = Numbered.of(self.seq, event)
        now = time.monotonic()
        self._ring.append((now, numbered))
        while self._ring and now - self._ring[0][0] > self._seconds:
            self._ring.popleft()
        for listener in list(self._listeners):
            listener(numbered)

    def oldest(self) -> int:
        """The sequence number of the oldest event kept (the next one if none is)."""
        return self._ring[0][1].seq if self._ring else self.seq + 1

    def since(self, seq: int) -> list[Numbered]:
        """The kept events after ``seq``."""
        return [numbered for _, numbered in self._ring if numbered.seq > seq]

    def listen(self, listener: Callable[[Numbered], None]) -> Callable[[], None]:
        """Call ``listener`` with each new event; returns what stops it."""
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)


class CutOff(Exception):
    """The subscriber fell too far behind; the reason is sent to it."""


class Subscriber:
    """One client's view: its tag patterns, its token's visibility, and its bounded queue."""

    def __init__(self, ring: EventRing, token: ApiToken, patterns: Iterable[str], on_cut_off: Callable[[str], None],
                 max_backlog: int) -> None:
        self.token = token
        self._on_cut_off = on_cut_off
        self.patterns = tuple(patterns) or ("",)
        self._view = ring.view(token, self.patterns)
        self._queue: collections.deque[Numbered] = collections.deque()
        self._max = max_backlog
        self._wake = asyncio.Event()
        self.cut_off = ""

    def wants(self, numbered: Numbered) -> bool:
        """Whether this subscriber gets ``numbered``."""
        wanted = numbered.wanted.get(self._view)
        if wanted is None:
            tag = numbered.tag
            wanted = numbered.wanted[self._view] = (any(tag_matches(p, tag) for p in self.patterns)
                                                   and visible(self.token, tag, numbered.agent))
        return wanted

    def offer(self, numbered: Numbered) -> None:
        """Queue ``numbered`` if wanted; past the backlog the subscriber is cut off (never waited for)."""
        if self.cut_off or not self.wants(numbered):
            return
        if len(self._queue) >= self._max:
            self.cut_off = f"slow consumer: more than {self._max} events waiting to be read"
            self._queue.clear()
            self._on_cut_off(self.cut_off)  # its writer may be stuck on a socket nobody reads
        else:
            self._queue.append(numbered)
        self._wake.set()

    async def take(self, most: int) -> list[Numbered]:
        """The next queued events (at least one, at most ``most``); CutOff once cut off."""
        while not self._queue and not self.cut_off:
            self._wake.clear()
            await self._wake.wait()
        if self.cut_off:
            raise CutOff(self.cut_off)
        return [self._queue.popleft() for _ in range(min(most, len(self._queue)))]
