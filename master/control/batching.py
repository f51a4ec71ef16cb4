"""Events queued per stream and sent in one reply per turn of the event loop, or as soon as
MAX_BATCH have queued up, so a burst never gathers in memory: what both control front ends do
(server.py over ZeroMQ, stream.py over a Unix stream)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from ..events.bus import Event

MAX_BATCH = 1000
K = TypeVar("K", bound=Hashable)


class EventBatches(Generic[K]):
    """Per-stream queues of events, handed to ``send(key, events)`` in batches."""

    def __init__(self, send: Callable[[K, list[Event]], None]) -> None:
        self._send = send
        self._pending: dict[K, list[Event]] = {}
        self._flush_scheduled = False

    def queue(self, key: K, event: Event) -> None:
        """Queue ``event`` for the stream ``key``; sent this turn of the loop, or now if a batch is full."""
        events = self._pending.setdefault(key, [])
        events.append(event)
        if len(events) >= MAX_BATCH:
            del self._pending[key]
            self._send(key, events)
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def drop(self, key: K) -> None:
        """Forget what is queued for ``key`` (its stream ended)."""
        self._pending.pop(key, None)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for key, events in pending.items():
            self._send(key, events)
