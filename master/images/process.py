"""Subprocesses of a build: each with a timeout, its output in the build log, killed when the build stops.

Every tool runs in its own session (process group), so a Ctrl-C on the terminal reaches
only saltmarsh, which then ends the tool's whole group itself (SIGTERM, then SIGKILL): a
build that stops leaves no mmdebstrap or pip behind, still writing into a directory that
is being removed. SIGTERM and SIGHUP become BuildInterrupted (``signals_interrupt``), so
the same clean-up runs for them as for an error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from .errors import BuildFailed, BuildInterrupted

KILL_GRACE = 20.0
TAIL_LINES = 40


def run(argv: Sequence[str], *, timeout: float, log: IO[str], env: dict[str, str] | None = None,
        cwd: Path | None = None, stdin: Path | None = None) -> None:
    """Run ``argv`` with its output appended to ``log``; BuildFailed if it exits non-zero or times out.

    ``stdin``: a file the tool reads as its standard input (else it reads nothing).
    """
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    with contextlib.ExitStack() as stack:
        source: IO[bytes] | int = stack.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
        process = subprocess.Popen(list(argv), stdin=source, stdout=log, stderr=subprocess.STDOUT,
                                   env=env, cwd=cwd, start_new_session=True)
    try:
        status = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end(process)
        raise BuildFailed(f"{Path(argv[0]).name} did not finish within {timeout:.0f} s") from None
    except BaseException:
        _end(process)
        raise
    if status != 0:
        raise BuildFailed(f"{Path(argv[0]).name} exited with status {status}: {last_line(log)}")


def output(argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> str:
    """The standard output of a short read-only command (qemu-img info); BuildFailed if it fails."""
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise BuildFailed(f"{Path(argv[0]).name} did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1:] or [f"status {result.returncode}"]
        raise BuildFailed(f"{Path(argv[0]).name}: {reason[0]}")
    return result.stdout


def _end(process: subprocess.Popen[bytes]) -> None:
    """Stop the process's whole group: SIGTERM, then SIGKILL after KILL_GRACE seconds."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, KILL_GRACE)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def last_line(log: IO[str]) -> str:
    """The last non-empty line written to ``log`` (a file opened for appending), for a one-line failure."""
    log.flush()
    try:
        with open(log.name, encoding="utf-8", errors="replace") as reader:
            lines = [line.strip() for line in reader.readlines()[-TAIL_LINES:] if line.strip()]
    except OSError:
        return "(no output)"
    return lines[-1][:300] if lines else "(no output)"


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise BuildInterrupted in the main thread (so clean-up runs)."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise BuildInterrupted(f"interrupted by {signal.Signals(signum).name}; removed everything the build made")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
