"""A log rate limit per reason, so that a peer sending garbage cannot flood a daemon's log.

Every refused input still gets its logged reason (and its counter), up to a
burst per reason; past the burst, lines of that reason are let through at a
steady rate and the rest are counted, and the next line let through is
preceded by one line saying how many were left out. The reasons are a small
fixed set (exception class names and the like, never text a peer chose), so
the limiter's own memory is bounded too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

# Enough that every line of a burst of distinct mistakes is kept (a test, a misconfigured agent
# retrying), few enough that sustained garbage costs at most a line a second per reason.
DEFAULT_BURST = 200
DEFAULT_PER_SECOND = 1.0


@dataclass
class _Bucket:
    tokens: float
    updated: float
    suppressed: int = 0
    suppressed_since: float = 0.0


class LogRateLimit:
    """A token bucket per reason key: ``burst`` lines at once, then ``per_second`` lines a second."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = DEFAULT_BURST,
        per_second: float = DEFAULT_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._burst = burst
        self._rate = per_second
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.suppressed = 0

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at ``level`` unless ``key`` is over its rate; return whether it was logged."""
        now = self._clock()
        bucket = self._bucket(key, now)
        if bucket.tokens < 1.0:
            if not bucket.suppressed:
                bucket.suppressed_since = now
            bucket.suppressed += 1
            self.suppressed += 1
            return False
        bucket.tokens -= 1.0
        if bucket.suppressed:
            self._log.warning("%d more lines like the next (%s) were not logged in the last %.0f s",
                              bucket.suppressed, key, now - bucket.suppressed_since)
            bucket.suppressed = 0
        self._log.log(level, msg, *args)
        return True

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """``log`` at WARNING."""
        return self.log(logging.WARNING, key, msg, *args)

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self._burst), now)
            return bucket
        bucket.tokens = min(float(self._burst), bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        return bucket
