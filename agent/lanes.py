"""The agent's worker threads: two lanes of bounded pools whose stuck threads are replaced.

A lane serves its queue with at most ``slots`` threads, started as work comes. When the
executor gives up on a call that is still running (its deadline passed, or it was killed),
the lane *abandons* that thread: it no longer counts as one of the slots, a new thread takes
its place for the next job, and the old one ends when its call finally returns (or goes back
to serving if a slot is free by then). Python cannot stop a thread, so this is the most an
agent can do for code stuck in C (a libvirt call, a read on a hung NFS mount); what it buys
is that one stuck call costs one thread, never the agent's capacity.

Abandoned threads are bounded: past ``max_abandoned`` a lane starts no replacement, so a
host where every call hangs ends with ``slots + max_abandoned`` threads, not one per job,
and jobs then wait for a worker until their deadline (they return TimedOut, saying why).

Threads are daemon threads: a stuck one never holds up the agent's exit
(ThreadPoolExecutor's would, since it joins its threads when the interpreter exits).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from saltmarsh.protocol.jobcontrol import LaneName

log = logging.getLogger(__name__)

# Threads of the quick lane (test.ping, sys.*, host.info, job.*): enough that a few stuck
# host.info calls on a wedged libvirt still leave room, few since each call takes microseconds.
QUICK_SLOTS = 4
# Each lane keeps at most this many abandoned threads per slot before it stops replacing them.
ABANDONED_PER_SLOT = 4


class WorkItem:
    """One call waiting for, or running in, a lane's thread; ``future`` holds its outcome."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.call = call
        self.abandoned = False
        self.finished = False

    def run(self) -> None:
        """Run the call unless it was cancelled first; its result or exception goes to ``future``."""
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.call()
        except BaseException as exc:  # noqa: BLE001 -- whatever ends the call belongs to its caller, as in ThreadPoolExecutor
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class Lane:
    """Up to ``slots`` daemon threads serving one queue; abandoned threads are replaced (bounded)."""

    def __init__(self, name: LaneName, slots: int, max_abandoned: int) -> None:
        self.name = name
        self.slots = slots
        self.max_abandoned = max_abandoned
        self._queue: queue.SimpleQueue[WorkItem | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._serving = 0  # threads that take work: idle, or running a call not given up on
        self._idle = 0
        self._waiting = 0  # items put in the queue and not yet taken
        self._started = 0
        self.abandoned = 0  # threads still inside a call the executor gave up on
        self._shut = False

    def submit(self, call: Callable[[], Any]) -> WorkItem:
        """Queue ``call`` for the next free thread; RuntimeError once the lane is shut down."""
        item = WorkItem(call)
        with self._lock:
            if self._shut:
                raise RuntimeError(f"the {self.name} lane is shut down")
            self._waiting += 1
            self._queue.put(item)
            self._grow_locked()
        return item

    def abandon(self, item: WorkItem) -> bool:
        """Give up on ``item``'s running thread and let another take its slot.

        False if it has not started (cancel its future instead) or has already ended.
        """
        with self._lock:
            if item.finished or item.abandoned or not (item.future.running() or item.future.done()):
                return False
            item.abandoned = True
            self._serving -= 1
            self.abandoned += 1
            if self.abandoned >= self.max_abandoned:
                log.error("%s lane: %d threads are stuck in calls given up on (limit %d): no replacement "
                          "until one returns", self.name, self.abandoned, self.max_abandoned)
            self._grow_locked()
        return True

    def busy(self) -> int:
        """Threads running a call not given up on."""
        with self._lock:
            return self._serving - self._idle

    def _grow_locked(self) -> None:
        """Start a thread if work waits with no idle thread, a slot is free, and the bound allows."""
        if self._shut or self._waiting <= self._idle or self._serving >= self.slots:
            return
        if self.abandoned >= self.max_abandoned:
            return
        self._serving += 1
        self._started += 1
        threading.Thread(target=self._work, name=f"{self.name}_{self._started}", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._queue.get()
            with self._lock:
                self._idle -= 1
                if item is None:
                    self._serving -= 1
                    return
                self._waiting -= 1
            item.run()
            if not self._after(item):
                return

    def _after(self, item: WorkItem) -> bool:
        """Bookkeeping once a call returns; False if this thread ends (it was abandoned, no slot free)."""
        with self._lock:
            item.finished = True
            if not item.abandoned:
                return True
            self.abandoned -= 1
            if self._shut or self._serving >= self.slots:
                return False
            self._serving += 1  # a slot is free: this thread serves again
            return True

    def shutdown(self) -> None:
        """Take no more work; cancel what has not started; idle threads end (running ones are daemons)."""
        with self._lock:
            self._shut = True
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self._waiting -= 1
                    item.future.cancel()
            for _ in range(self._serving):
                self._queue.put(None)


class JobLanes:
    """The quick lane and the jobs lane of one agent (a swarm shares one JobLanes among its members)."""

    def __init__(self, workers: int, quick_slots: int = QUICK_SLOTS) -> None:
        self.quick = Lane("quick", quick_slots, ABANDONED_PER_SLOT * quick_slots)
        self.jobs = Lane("jobs", workers, ABANDONED_PER_SLOT * workers)

    def lane(self, name: LaneName) -> Lane:
        """The lane called ``name``."""
        return self.quick if name == "quick" else self.jobs

    @property
    def abandoned(self) -> int:
        """Threads of both lanes stuck in calls given up on."""
        return self.quick.abandoned + self.jobs.abandoned

    def shutdown(self) -> None:
        """Shut both lanes down."""
        self.quick.shutdown()
        self.jobs.shutdown()


__all__ = ["ABANDONED_PER_SLOT", "QUICK_SLOTS", "JobLanes", "Lane", "WorkItem"]
