"""Runs jobs in worker threads (never on the event loop), journals them, and turns outcomes into returns.

Every job is journaled in the spool (agent/spool.py) before it runs, and its return is written
there by the worker thread that ran it, before the loop sees it: neither a master outage nor an
agent restart loses it, and a jid seen again (published twice, delivered again after a
restart) is not run twice.

The agent's own workers are daemon threads (WorkerPool). ThreadPoolExecutor's threads are
joined when the interpreter exits, so one long job (``test.sleep 3600``, a stuck libvirt call)
would hold a stopping agent for as long as it runs. Instead, a stopping agent gives running
jobs SHUTDOWN_GRACE_SECONDS: a job done by then has its return spooled (sent at the next
start); one still running is abandoned with the process, and the journal reports it as
interrupted at the next start.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from saltmarsh.protocol.codec import encode
from saltmarsh.protocol.messages import ErrorInfo, Job, JobReturn

from . import functions
from .errors import SpoolError
from .functions import FunctionContext
from .outbox import ReturnOutbox
from .spool import Spool

log = logging.getLogger(__name__)

SEEN_JIDS = 10_000
MAX_RESULT_BYTES = 1024 * 1024
SHUTDOWN_GRACE_SECONDS = 5.0

P = ParamSpec("P")
T = TypeVar("T")


class Executor:
    """Deduplicates jobs by jid (journaled on disk) and runs each in the worker pool."""

    def __init__(
        self, ctx: FunctionContext, workers: int, outbox: ReturnOutbox, spool: Spool,
        pool: concurrent.futures.Executor | None = None,
    ) -> None:
        functions.load_all()
        self._ctx = ctx
        # A swarm (agent/swarm.py) passes one pool shared by all its agents; it owns and ends that pool.
        self._owns_pool = pool is None
        self._pool = pool or WorkerPool(workers, "job")
        self._outbox = outbox
        self._spool = spool
        # Jids this process saw: answers a repeat without a disk read, and still dedups if the spool fails.
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._running: set[asyncio.Task[None]] = set()

    def submit(self, job: Job) -> None:
        """Start ``job`` unless this jid was already run, here or before a restart."""
        if job.jid in self._seen or not self._journal(job):
            log.info("job %s already run here: ignored", job.jid)
            return
        self._seen[job.jid] = None
        if len(self._seen) > SEEN_JIDS:
            self._seen.popitem(last=False)
        task = asyncio.create_task(self._run(job), name=f"job-{job.jid}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _journal(self, job: Job) -> bool:
        try:
            return self._spool.begin_job(job.jid, job.fun)
        except SpoolError as exc:
            log.error("job %s not journaled (%s): running it anyway; a restart may not report it", job.jid, exc)
            return True

    async def _run(self, job: Job) -> None:
        log.info("job %s: %s", job.jid, job.fun)
        ret, spooled = await asyncio.wrap_future(self._pool.submit(self._execute, job))
        self._outbox.add(ret, spooled=spooled)

    def _execute(self, job: Job) -> tuple[JobReturn, bool]:
        """In a worker thread: run the function, then spool its return."""
        ret = run_function(self._ctx, job)
        try:
            self._spool.put_return(ret)
        except SpoolError as exc:
            if self._spool.closed:
                log.warning("job %s ended after the agent stopped: the next start reports it interrupted", job.jid)
            else:
                log.error("return of job %s not spooled (%s): kept in memory only", job.jid, exc)
            return ret, False
        return ret, True

    async def shutdown(self) -> None:
        """Give running jobs SHUTDOWN_GRACE_SECONDS, then stop the workers; a job still running is abandoned."""
        if self._running:
            log.info("waiting up to %.0f s for %d running jobs", SHUTDOWN_GRACE_SECONDS, len(self._running))
            _, pending = await asyncio.wait(self._running, timeout=SHUTDOWN_GRACE_SECONDS)
            if pending:
                log.warning("%d jobs still running are abandoned; the next start reports them interrupted",
                            len(pending))
        if self._owns_pool:
            self._pool.shutdown(wait=False, cancel_futures=True)


def run_function(ctx: FunctionContext, job: Job) -> JobReturn:
    """Call the job's function and build its return; a raise becomes a structured error."""
    started = time.time()
    clock = time.monotonic()  # the duration must not go negative if the wall clock steps back
    try:
        result: Any = functions.call(job.fun, ctx, list(job.args), dict(job.kwargs))
        size = len(encode(result))  # a result we cannot send is the function's error, found here
        if size > MAX_RESULT_BYTES:
            raise ValueError(f"result of {size} bytes exceeds the {MAX_RESULT_BYTES}-byte limit of a return")
        return JobReturn(jid=job.jid, fun=job.fun, success=True, result=result,
                         started=started, duration=time.monotonic() - clock)
    except Exception as exc:  # noqa: BLE001 -- any failure of the function is reported, never lost
        error = ErrorInfo(type=type(exc).__name__, message=str(exc)[:4000])
    log.info("job %s %s failed: %s: %s", job.jid, job.fun, error.type, error.message)
    return JobReturn(jid=job.jid, fun=job.fun, success=False, error=error,
                     started=started, duration=time.monotonic() - clock)


@dataclass
class _WorkItem:
    future: concurrent.futures.Future[Any]
    call: Callable[[], Any]

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.call()
        except BaseException as exc:  # noqa: BLE001 -- whatever ends the call belongs to its caller, as in ThreadPoolExecutor
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class WorkerPool(concurrent.futures.Executor):
    """Up to ``workers`` daemon threads, started as work comes: a running job never holds up the exit."""

    def __init__(self, workers: int, name: str) -> None:
        self._max = workers
        self._name = name
        self._queue: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one count per idle thread, taken by the work that will wake it
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        """Run ``fn(*args, **kwargs)`` in a worker thread."""
        with self._lock:
            if self._shut:
                raise RuntimeError("the worker pool is shut down")
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._queue.put(_WorkItem(future, functools.partial(fn, *args, **kwargs)))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max:
                thread = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)
            return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            item.run()
            del item  # drop the result before idling
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; with ``cancel_futures``, drop what has not started; ``wait`` joins the threads."""
        with self._lock:
            self._shut = True
            while cancel_futures:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item.future.cancel()
            for _ in self._threads:
                self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
