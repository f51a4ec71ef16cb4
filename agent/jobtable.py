"""The jobs an agent holds right now: what ``job.running`` lists and ``job.kill`` acts on.

Each job gets a JobEntry when it arrives, and keeps it until it ends, or, if it was given up
on while its thread was still inside a call, until that thread comes back (state
``abandoned``, listed so that an operator sees what a stuck call is holding).

Exactly one outcome settles a job: its function returned (``done``), its deadline passed
(TIMED_OUT) or it was killed (KILLED); ``JobEntry.settle`` decides which came first, so a
job whose result and deadline arrive together gets one return, never two.

Child processes a job runs through ``run_child`` are the job's own: they are started in a
new session and the whole process group is killed (SIGKILL) when the job is killed or times
out, which also ends the call waiting on them. That is how a job that blocks in a tool
(qemu-img on a hung mount) truly ends, where a thread stuck in C can only be abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from saltmarsh.protocol.jobcontrol import KILLED, TIMED_OUT, JobState, KillReport, LaneName, RunningJob
from saltmarsh.protocol.jobproof import JobProof
from saltmarsh.protocol.messages import Job

from .errors import FunctionError

log = logging.getLogger(__name__)

DONE = "done"
# How long ``job.kill`` waits for the executor to learn whether the job ended or was abandoned.
REPORT_WAIT_SECONDS = 10.0

_current = threading.local()


class JobEntry:
    """One job on this agent, from its arrival until it ended (or its abandoned thread returned)."""

    def __init__(self, job: Job, lane: LaneName, loop: asyncio.AbstractEventLoop) -> None:
        self.job = job
        self.lane: LaneName = lane
        self.received = time.time()
        self.clock = time.monotonic()  # the deadline must not move if the wall clock steps
        self.deadline = self.clock + job.timeout
        self.state: JobState = "queued"
        self.outcome = ""
        self.how = ""
        self._loop = loop
        self._lock = threading.Lock()
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self.killed: list[int] = []  # pids of the children killed with the job
        self.proof: JobProof | None = None  # the signed job, for a function that hands it on (host.setup)
        self._reported = threading.Event()
        # Set (on the loop) when the job is killed, to wake the executor that waits on its call.
        self.woken: asyncio.Future[None] = loop.create_future()

    def remaining(self) -> float:
        """Seconds until the deadline (0 once it has passed)."""
        return max(0.0, self.deadline - time.monotonic())

    def settle(self, outcome: str) -> bool:
        """Make ``outcome`` the job's one outcome; False if another came first."""
        with self._lock:
            if self.outcome:
                return False
            self.outcome = outcome
            return True

    def wake(self) -> None:
        """From any thread: wake the executor waiting on this job (it was killed)."""
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if not self.woken.done():
            self.woken.set_result(None)

    def report(self, how: str, state: JobState | None = None) -> None:
        """The executor's word on how the job was given up on (what ``job.kill`` answers)."""
        self.how = how
        if state is not None:
            self.state = state
        self._reported.set()

    def wait_reported(self, timeout: float) -> bool:
        """Block until ``report`` was called (False after ``timeout``)."""
        return self._reported.wait(timeout)

    def add_child(self, proc: subprocess.Popen[bytes]) -> None:
        """Hold ``proc`` as this job's child; killed at once if the job was already given up on."""
        with self._lock:
            self._children[proc.pid] = proc
            given_up = self.outcome not in ("", DONE)
        if given_up:
            self.kill_children()

    def drop_child(self, proc: subprocess.Popen[bytes]) -> None:
        """``proc`` ended: no longer this job's to kill."""
        with self._lock:
            self._children.pop(proc.pid, None)

    def kill_children(self) -> list[int]:
        """SIGKILL every child's process group; the pids signalled."""
        with self._lock:
            children = list(self._children.values())
        killed = []
        for proc in children:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):  # it ended just now
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
        with self._lock:
            self.killed.extend(pid for pid in killed if pid not in self.killed)
        return killed

    def snapshot(self) -> RunningJob:
        """This job as ``job.running`` shows it."""
        with self._lock:
            children = sorted(self._children)
        state = self.state
        return RunningJob(
            jid=self.job.jid, fun=self.job.fun, lane=self.lane, state=state, started=self.received,
            elapsed=max(0.0, time.monotonic() - self.clock),
            deadline=0.0 if state == "abandoned" else self.remaining(), children=children,
            reason=self.how if state == "abandoned" else "",
        )


class JobTable:
    """Every JobEntry of one agent, by jid; safe to use from any thread."""

    def __init__(self, lanes_abandoned: Callable[[], int]) -> None:
        """``lanes_abandoned`` counts the agent's abandoned threads (reported with every kill)."""
        self._entries: dict[str, JobEntry] = {}
        self._lock = threading.Lock()
        self._abandoned = lanes_abandoned

    def add(self, entry: JobEntry) -> None:
        """Hold a job that just arrived."""
        with self._lock:
            self._entries[entry.job.jid] = entry

    def discard(self, entry: JobEntry) -> None:
        """Forget ``entry`` (if it is still the one held for its jid)."""
        with self._lock:
            if self._entries.get(entry.job.jid) is entry:
                del self._entries[entry.job.jid]

    def running(self, exclude: str = "") -> list[RunningJob]:
        """Every job held, oldest first, but ``exclude`` (the caller's own jid)."""
        with self._lock:
            entries = [e for jid, e in self._entries.items() if jid != exclude]
        return sorted((e.snapshot() for e in entries), key=lambda r: r.jid)

    def kill(self, jid: str) -> KillReport:
        """End job ``jid``: kill its children, or free its slot and abandon its thread; say which."""
        with self._lock:
            entry = self._entries.get(jid)
        if entry is None:
            return KillReport(jid=jid, outcome="not running", how="this agent holds no such job",
                              abandoned=self._abandoned())
        if not entry.settle(KILLED):
            how = ("it had already ended" if entry.outcome == DONE else
                   f"it was already given up on ({entry.outcome}): {entry.how}")
            return KillReport(jid=jid, outcome="already ended", how=how, abandoned=self._abandoned())
        children = entry.kill_children()
        entry.wake()
        if not entry.wait_reported(REPORT_WAIT_SECONDS):
            raise FunctionError(f"job {jid} was marked killed, but the agent did not confirm it within "
                                f"{REPORT_WAIT_SECONDS:.0f} s")
        return KillReport(jid=jid, outcome="killed", how=entry.how, children=children, abandoned=self._abandoned())


def current_job() -> JobEntry | None:
    """The job the calling worker thread runs, if any."""
    entry: JobEntry | None = getattr(_current, "entry", None)
    return entry


@contextlib.contextmanager
def running_in(entry: JobEntry) -> Iterator[None]:
    """Mark the calling thread as running ``entry`` while inside."""
    _current.entry = entry
    entry.state = "running"
    try:
        yield
    finally:
        _current.entry = None


def run_child(argv: Sequence[str], *, timeout: float, stdin: int | None = subprocess.DEVNULL,
              ) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as a child of the current job (killed with it); like ``subprocess.run(text=True)``.

    Outside a job (no current job) it is an ordinary child. TimeoutExpired after ``timeout``.
    """
    entry = current_job()
    with subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True) as proc:
        if entry is not None:
            entry.add_child(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        finally:
            if entry is not None:
                entry.drop_child(proc)
    return subprocess.CompletedProcess(list(argv), proc.returncode, out.decode(errors="replace"),
                                       err.decode(errors="replace"))


__all__ = ["DONE", "KILLED", "TIMED_OUT", "JobEntry", "JobTable", "current_job", "run_child", "running_in"]
