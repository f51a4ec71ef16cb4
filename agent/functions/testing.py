"""``test.*``: functions to check that agents answer and the bus carries what it should."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

from ..jobtable import run_child
from . import FunctionContext, function

MAX_SLEEP = 3600.0
MAX_BURST = 1_000_000
# test.count_run writes only here, under a plain file name: a test function is no way to write anywhere.
RUNS_DIR = "saltmarsh-test-runs"
RUN_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}\Z")


@function("test.ping", quick=True)
def ping(ctx: FunctionContext) -> bool:
    """Return True: the agent is up and runs jobs."""
    return True


@function("test.echo", quick=True)
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


@function("test.sleep_process")
def sleep_process(ctx: FunctionContext, seconds: float) -> bool:
    """Run ``sleep SECONDS`` (at most an hour) as a child process of the job, then return True.

    It blocks the way a job that runs a tool does (qemu-img on a hung mount): killing the job,
    or its deadline, kills the child, and the job truly ends instead of being abandoned.
    """
    if not 0 <= float(seconds) <= MAX_SLEEP:
        raise ValueError(f"seconds must be between 0 and {MAX_SLEEP:.0f}")
    done = run_child(["sleep", repr(float(seconds))], timeout=MAX_SLEEP + 60)
    if done.returncode != 0:
        raise RuntimeError(f"sleep ended with status {done.returncode}")
    return True


@function("test.fire_events")
def fire_events(ctx: FunctionContext, count: int, tag: str = "bench/event") -> int:
    """Fire ``count`` events tagged ``tag`` from this agent as fast as it can; return count."""
    if not 0 < int(count) <= MAX_BURST:
        raise ValueError(f"count must be between 1 and {MAX_BURST}")
    for i in range(int(count)):
        ctx.fire_event(tag, {"n": i})
    return int(count)


@function("test.fire_steadily")
def fire_steadily(ctx: FunctionContext, count: int, seconds: float, tag: str = "test/steady") -> int:
    """Fire ``count`` events tagged ``tag`` (data ``{"n": i}``) evenly spread over ``seconds``; return count."""
    if not 0 < int(count) <= MAX_BURST:
        raise ValueError(f"count must be between 1 and {MAX_BURST}")
    if not 0 <= float(seconds) <= MAX_SLEEP:
        raise ValueError(f"seconds must be between 0 and {MAX_SLEEP:.0f}")
    start = time.monotonic()
    for i in range(int(count)):
        delay = start + i * float(seconds) / int(count) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ctx.fire_event(tag, {"n": i})
    return int(count)


@function("test.count_run")
def count_run(ctx: FunctionContext, name: str, seconds: float = 0.0) -> int:
    """Append a line to ``<temp dir>/saltmarsh-test-runs/<name>``, sleep ``seconds``; return the lines so far.

    A test counts the lines to learn how often a job really ran (once, across an agent restart).
    """
    if not RUN_NAME.match(str(name)):
        raise ValueError("name must be a plain file name (letters, digits, '.', '_', '-'; at most 64)")
    path = Path(tempfile.gettempdir()) / RUNS_DIR / str(name)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    with path.open("a") as runs:
        runs.write(f"{ctx.agent_id} {time.time()}\n")
    lines = len(path.read_text().splitlines())
    sleep(ctx, seconds)
    return lines


@function("test.raise_error", quick=True)
def raise_error(ctx: FunctionContext, message: str = "raised on purpose") -> None:
    """Raise RuntimeError(``message``): shows how a failing function returns."""
    raise RuntimeError(message)
