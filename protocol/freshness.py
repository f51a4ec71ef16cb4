"""Freshness: a timestamp window plus a nonce cache, so a replayed frame is refused.

A nonce only has to be remembered while its frame could still pass the
timestamp check, so the cache holds at most (frames per second x window) and
expires entries in arrival order (twice the window, so that a clock stepped
back by up to a window does not make an expired nonce acceptable again). The
cache is also bounded in entries: when it is full, a frame whose nonce cannot be
recorded is refused rather than let through unrecorded (which would make it
replayable), until older entries expire.

Each entry is a 64-bit digest of (sender, nonce) kept as an int, and entries
expire by the second in buckets, so an entry costs about 70 bytes whatever a
sender chose to send (bench/swarm.py: a master serving 1,000 agents keeps up to
the whole window's frames). Two different frames share a digest with odds of
about n²/2⁶⁵ per window (n frames in it): the later one would be refused as a
replay and sent again by its agent.
"""

from __future__ import annotations

import collections
import hashlib
import math
import time
from collections.abc import Callable

from .errors import ReplayedFrame, StaleFrame
from .limits import Limits


def _entry(sender: str, nonce: bytes) -> int:
    # Length-prefixed so that ("ab", b"c...") and ("a", b"bc...") cannot collide.
    raw = sender.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(len(raw).to_bytes(4, "big") + raw + nonce, digest_size=8, person=b"smnonce").digest()
    return int.from_bytes(digest, "big")


class ReplayGuard:
    """Refuses frames that are too old, from the future, or seen before; holds at most ``max_entries`` nonces."""

    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.time,
                 max_entries: int = Limits.max_nonces) -> None:
        self._window = window_seconds
        self._clock = clock
        self._max = max_entries
        self._seen: set[int] = set()
        # (second at which these expire, their entries), oldest first: one bucket per second of arrivals.
        self._expiry: collections.deque[tuple[int, list[int]]] = collections.deque()

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
        key = _entry(sender, nonce)
        if key in self._seen:
            raise ReplayedFrame(f"nonce {nonce.hex()} from {sender} was already seen")
        if len(self._seen) >= self._max:
            raise ReplayedFrame(
                f"replay cache is full ({self._max} nonces inside the window): cannot record the nonce "
                f"from {sender}, so its frame is refused until older entries expire"
            )
        self._seen.add(key)
        expires = math.ceil(now + 2 * self._window)
        if self._expiry and self._expiry[-1][0] == expires:
            self._expiry[-1][1].append(key)
        else:
            self._expiry.append((expires, [key]))

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, keys = self._expiry.popleft()
            self._seen.difference_update(keys)

    def __len__(self) -> int:
        return len(self._seen)
