"""Freshness: a timestamp window plus a nonce cache, so a replayed frame is refused.

A nonce only has to be remembered while its frame could still pass the
timestamp check, so the cache holds at most (frames per second x window) and
expires entries in arrival order.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable

from .errors import ReplayedFrame, StaleFrame


class ReplayGuard:
    """Refuses frames that are too old, from the future, or seen before."""

    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._window = window_seconds
        self._clock = clock
        self._seen: set[tuple[str, bytes]] = set()
        self._expiry: collections.deque[tuple[float, tuple[str, bytes]]] = collections.deque()

    def check(self, sender: str, ts: float, nonce: bytes) -> None:
        """Record (sender, nonce); raise StaleFrame or ReplayedFrame if it must be refused."""
        now = self._clock()
        if not math.isfinite(ts):
            # NaN compares false with everything, so it would pass the window check below
            # and make a frame replayable forever once its nonce expires from the cache.
            raise StaleFrame(f"timestamp {ts!r} is not a time")
        skew = ts - now
        if abs(skew) > self._window:
            raise StaleFrame(
                f"timestamp is {skew:+.1f} s from this host's clock (window ±{self._window:.0f} s)"
            )
        self._expire(now)
        key = (sender, nonce)
        if key in self._seen:
            raise ReplayedFrame(f"nonce {nonce.hex()} from {sender} was already seen")
        self._seen.add(key)
        self._expiry.append((now + 2 * self._window, key))

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, key = self._expiry.popleft()
            self._seen.discard(key)

    def __len__(self) -> int:
        return len(self._seen)
