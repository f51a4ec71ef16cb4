"""Runs jobs in worker threads (never on the event loop) and turns outcomes into returns."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from saltmarsh.protocol.codec import encode
from saltmarsh.protocol.messages import ErrorInfo, Job, JobReturn

from . import functions
from .functions import FunctionContext
from .outbox import ReturnOutbox

log = logging.getLogger(__name__)

SEEN_JIDS = 10_000
MAX_RESULT_BYTES = 1024 * 1024


class Executor:
    """Deduplicates jobs by jid and runs each in the thread pool."""

    def __init__(
        self, ctx: FunctionContext, workers: int, outbox: ReturnOutbox, pool: ThreadPoolExecutor | None = None
    ) -> None:
        functions.load_all()
        self._ctx = ctx
        # A swarm (agent/swarm.py) passes one pool shared by all its agents; it owns and ends that pool.
        self._owns_pool = pool is None
        self._pool = pool or ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
        self._outbox = outbox
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._running: set[asyncio.Task[None]] = set()

    def submit(self, job: Job) -> None:
        """Start ``job`` unless this jid was already run."""
        if job.jid in self._seen:
            log.info("job %s already run here: ignored", job.jid)
            return
        self._seen[job.jid] = None
        if len(self._seen) > SEEN_JIDS:
            self._seen.popitem(last=False)
        task = asyncio.create_task(self._run(job), name=f"job-{job.jid}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, job: Job) -> None:
        log.info("job %s: %s", job.jid, job.fun)
        loop = asyncio.get_running_loop()
        ret = await loop.run_in_executor(self._pool, run_function, self._ctx, job)
        self._outbox.add(ret)

    def shutdown(self) -> None:
        """Stop accepting work; running functions finish in their threads."""
        if self._owns_pool:
            self._pool.shutdown(wait=False, cancel_futures=True)


def run_function(ctx: FunctionContext, job: Job) -> JobReturn:
    """Call the job's function and build its return; a raise becomes a structured error."""
    started = time.time()
    try:
        result: Any = functions.call(job.fun, ctx, list(job.args), dict(job.kwargs))
        size = len(encode(result))  # a result we cannot send is the function's error, found here
        if size > MAX_RESULT_BYTES:
            raise ValueError(f"result of {size} bytes exceeds the {MAX_RESULT_BYTES}-byte limit of a return")
        return JobReturn(jid=job.jid, fun=job.fun, success=True, result=result,
                         started=started, duration=time.time() - started)
    except Exception as exc:  # any failure of the function is reported, never lost
        error = ErrorInfo(type=type(exc).__name__, message=str(exc)[:4000])
    log.info("job %s %s failed: %s: %s", job.jid, job.fun, error.type, error.message)
    return JobReturn(jid=job.jid, fun=job.fun, success=False, error=error,
                     started=started, duration=time.time() - started)
