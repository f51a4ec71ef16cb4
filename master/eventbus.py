"""The master's event bus: every change becomes an Event, delivered to matching subscribers.

Subscribers are plain callbacks run on the event loop (the control server
turns them into batched sends to local clients); the bus keeps no history, as
Salt's does not: what must survive a restart (jobs, returns) is in the job cache.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from saltmarsh.protocol.tags import tag_matches

log = logging.getLogger(__name__)


class Event(msgspec.Struct, frozen=True):
    """One event: its tag, its data, when it happened, and which agent (if any) raised it."""

    tag: str
    data: Any
    ts: float
    agent: str = ""


Callback = Callable[[Event], None]


class EventBus:
    """In-process publish/subscribe keyed by tag pattern (prefix or glob)."""

    def __init__(self) -> None:
        self._subscribers: dict[int, tuple[str, Callback]] = {}
        self._ids = itertools.count(1)
        self.published = 0

    def subscribe(self, pattern: str, callback: Callback) -> int:
        """Deliver events whose tag matches ``pattern`` to ``callback``; return a handle."""
        handle = next(self._ids)
        self._subscribers[handle] = (pattern, callback)
        return handle

    def unsubscribe(self, handle: int) -> None:
        """Stop a subscription (unknown handles are ignored)."""
        self._subscribers.pop(handle, None)

    def fire(self, tag: str, data: Any = None, *, agent: str = "", ts: float | None = None) -> Event:
        """Publish one event to every matching subscriber."""
        event = Event(tag, data, time.time() if ts is None else ts, agent)
        self.published += 1
        for pattern, callback in list(self._subscribers.values()):
            if tag_matches(pattern, tag):
                try:
                    callback(event)
                except Exception:  # a broken subscriber must not stop the others
                    log.exception("event subscriber for %r failed on %s", pattern, tag)
        return event
