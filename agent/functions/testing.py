"""``test.*``: functions to check that agents answer and the bus carries what it should."""

from __future__ import annotations

import time
from typing import Any

from . import FunctionContext, function

MAX_SLEEP = 3600.0
MAX_BURST = 1_000_000


@function("test.ping")
def ping(ctx: FunctionContext) -> bool:
    """Return True: the agent is up and runs jobs."""
    return True


@function("test.echo")
def echo(ctx: FunctionContext, text: Any) -> Any:
    """Return ``text`` unchanged."""
    return text


@function("test.sleep")
def sleep(ctx: FunctionContext, seconds: float) -> bool:
    """Sleep ``seconds`` (at most an hour) in a worker thread, then return True."""
    if not 0 <= float(seconds) <= MAX_SLEEP:
        raise ValueError(f"seconds must be between 0 and {MAX_SLEEP:.0f}")
    time.sleep(float(seconds))
    return True


@function("test.fire_events")
def fire_events(ctx: FunctionContext, count: int, tag: str = "bench/event") -> int:
    """Fire ``count`` events tagged ``tag`` from this agent as fast as it can; return count."""
    if not 0 < int(count) <= MAX_BURST:
        raise ValueError(f"count must be between 1 and {MAX_BURST}")
    for i in range(int(count)):
        ctx.fire_event(tag, {"n": i})
    return int(count)


@function("test.raise_error")
def raise_error(ctx: FunctionContext, message: str = "raised on purpose") -> None:
    """Raise RuntimeError(``message``): shows how a failing function returns."""
    raise RuntimeError(message)
