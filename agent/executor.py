"""Runs jobs in worker threads (never on the event loop), holds their deadlines, and journals them.

Every job is journaled in the spool (agent/spool.py) before it runs, and its return is written
there before the loop sends it: neither a master outage nor an agent restart loses it, and a
jid seen again (published twice, delivered again after a restart) is not run twice.

**Deadlines.** A job's ``timeout`` is its deadline on this agent, counted from its arrival
(time spent waiting for a worker counts). When it passes, the agent answers at once with a
failed return of type TimedOut (protocol/jobcontrol.py) and frees the job's slot, whatever
the function is doing; ``job.kill`` does the same with type Killed. How the slot is freed:

- a job still waiting for a worker is taken out of the queue (it never runs);
- a job whose child processes (``jobtable.run_child``) hold it has them killed, and ends;
- a job stuck in its own thread (a libvirt call in C, ``time.sleep``) has that thread
  abandoned: its lane starts another for the next job (agent/lanes.py), the stuck one is
  listed by ``job.running`` as ``abandoned`` until its call returns, and its result is
  dropped. Abandoned threads are bounded per lane.

**Lanes.** Functions registered ``quick`` (test.ping, sys.*, host.info, job.*) run in a lane
of their own, so ten stuck jobs filling the jobs lane do not delay a ping.

Why threads, and not a process per job as Salt does, measured on this 2-core machine: a thread
starts and joins in 0.16 ms; a fresh interpreter that imports the agent's functions and opens
libvirt takes 184 ms (ten times a whole ``run hv1 test.ping``), and fork() of the agent (5 ms)
is unsafe with its threads, its ZeroMQ context and its libvirt connection, whose socket a
child must never use. Jobs also need the agent's own libvirt connection and its request
channel (master:// images). So jobs share the process, a job's deadline is enforced by
giving up on its thread, true kills are for child processes, and a wedged libvirt
connection is detected and replaced (agent/virt/host.py), so that new calls do not queue
behind the stuck ones. With 10 stuck ``test.sleep 600`` jobs a ping answered in the same
time as without them (tests/test_job_control.py prints both).

A stopping agent gives running jobs SHUTDOWN_GRACE_SECONDS: a job done by then has its return
spooled (sent at the next start); one still running is abandoned with the process, and the
journal reports it as interrupted at the next start.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import time
from typing import Any

from saltmarsh.protocol.codec import encode
from saltmarsh.protocol.jobcontrol import KILLED, TIMED_OUT, JobState
from saltmarsh.protocol.jobproof import JobProof
from saltmarsh.protocol.messages import ErrorInfo, Job, JobReturn

from . import functions
from .errors import SpoolError
from .functions import FunctionContext
from .jobtable import DONE, JobEntry, JobTable, running_in
from .lanes import JobLanes, Lane, WorkItem
from .outbox import ReturnOutbox
from .spool import Spool

log = logging.getLogger(__name__)

SEEN_JIDS = 10_000
MAX_RESULT_BYTES = 1024 * 1024
SHUTDOWN_GRACE_SECONDS = 5.0
# After a job's children are killed, how long its thread gets to come back before it is abandoned.
CHILD_EXIT_SECONDS = 2.0


class Executor:
    """Deduplicates jobs by jid (journaled on disk), runs each in its lane, and holds its deadline."""

    def __init__(
        self, ctx: FunctionContext, table: JobTable, lanes: JobLanes, outbox: ReturnOutbox, spool: Spool,
        *, owns_lanes: bool = True,
    ) -> None:
        functions.load_all()
        self._ctx = ctx
        self._table = table
        # A swarm (agent/swarm.py) passes lanes shared by all its agents; it owns and ends them.
        self._lanes = lanes
        self._owns_lanes = owns_lanes
        self._outbox = outbox
        self._spool = spool
        # Jids this process saw: answers a repeat without a disk read, and still dedups if the spool fails.
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._running: set[asyncio.Task[None]] = set()

    def submit(self, job: Job, proof: JobProof | None = None) -> None:
        """Start ``job`` unless this jid was already run, here or before a restart.

        ``proof`` is the job as the master signed it, kept only for functions that hand it on.
        """
        if job.jid in self._seen or not self._journal(job):
            log.info("job %s already run here: ignored", job.jid)
            return
        self._seen[job.jid] = None
        if len(self._seen) > SEEN_JIDS:
            self._seen.popitem(last=False)
        entry = JobEntry(job, functions.lane_of(job.fun), asyncio.get_running_loop())
        entry.proof = proof if job.fun in functions.PROVEN else None
        self._table.add(entry)
        task = asyncio.create_task(self._run(entry), name=f"job-{job.jid}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _journal(self, job: Job) -> bool:
        try:
            return self._spool.begin_job(job.jid, job.fun)
        except SpoolError as exc:
            log.error("job %s not journaled (%s): running it anyway; a restart may not report it", job.jid, exc)
            return True

    async def _run(self, entry: JobEntry) -> None:
        log.info("job %s: %s", entry.job.jid, entry.job.fun)
        lane = self._lanes.lane(entry.lane)
        try:
            item = lane.submit(functools.partial(self._execute, entry))
        except RuntimeError:
            self._table.discard(entry)
            return  # the agent is stopping: the journal reports the job interrupted at the next start
        work = asyncio.wrap_future(item.future)
        await asyncio.wait({work, entry.woken}, timeout=entry.remaining(), return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            entry.settle(TIMED_OUT)  # unless a kill or the result came first
        if entry.outcome == DONE:
            finished = await work
            self._table.discard(entry)
            if finished is not None:
                ret, spooled = finished
                self._outbox.add(ret, spooled=spooled)
            return
        await self._give_up(entry, lane, item, work)

    def _execute(self, entry: JobEntry) -> tuple[JobReturn, bool] | None:
        """In a worker thread: run the function, then spool its return unless the job was given up on."""
        with running_in(entry):
            ctx = self._ctx if entry.proof is None else dataclasses.replace(self._ctx, job_proof=entry.proof)
            ret = run_function(ctx, entry.job)
        if not entry.settle(DONE):
            log.warning("job %s came back after it was given up on (%s), %.1f s after it arrived: "
                        "its result is dropped", entry.job.jid, entry.outcome, time.monotonic() - entry.clock)
            self._table.discard(entry)
            return None
        spooled = self._spool_return(ret)
        # What a test waits for to know a return is the agent's to deliver (a master away meanwhile).
        log.debug("job %s finished; its return is %s", entry.job.jid, "spooled" if spooled else "in memory")
        return ret, spooled

    async def _give_up(self, entry: JobEntry, lane: Lane, item: WorkItem, work: asyncio.Future[Any]) -> None:
        """Free the slot of a job that timed out or was killed, and answer for it."""
        entry.kill_children()
        children = entry.killed
        if children and not work.done():
            await asyncio.wait({work}, timeout=CHILD_EXIT_SECONDS)
        state: JobState | None = None
        if work.done():
            how = (f"its child process{'es' if len(children) > 1 else ''} {', '.join(map(str, children))} "
                   "killed; the job ended") if children else "the job ended"
        elif item.future.cancel():
            how = f"it never started: all {lane.slots} workers of the {lane.name} lane were busy"
            if lane.abandoned >= lane.max_abandoned:
                how = (f"it never started: {lane.abandoned} threads of the {lane.name} lane are stuck in calls "
                       "given up on, the most it keeps, so no worker was free")
        elif lane.abandon(item):
            state = "abandoned"
            how = "its thread is abandoned, still inside its call; its slot went to the next job"
        else:
            how = "the job ended"
        what = "ran past its" if entry.outcome == TIMED_OUT else "was killed before its"
        message = f"{entry.job.fun} {what} {entry.job.timeout:g} s deadline: {how}"
        log.warning("job %s %s: %s", entry.job.jid, "timed out" if entry.outcome == TIMED_OUT else "killed", how)
        ret = JobReturn(jid=entry.job.jid, fun=entry.job.fun, success=False,
                        error=ErrorInfo(type=entry.outcome, message=message[:4000]),
                        started=entry.received, duration=time.monotonic() - entry.clock)
        spooled = await asyncio.get_running_loop().run_in_executor(None, self._spool_return, ret)
        self._outbox.add(ret, spooled=spooled)
        entry.report(how, state)
        if state != "abandoned" or item.finished:
            self._table.discard(entry)

    def _spool_return(self, ret: JobReturn) -> bool:
        """Write ``ret`` to the spool (any thread); False if it is kept in memory only."""
        try:
            self._spool.put_return(ret)
        except SpoolError as exc:
            if self._spool.closed:
                log.warning("job %s ended after the agent stopped: the next start reports it interrupted", ret.jid)
            else:
                log.error("return of job %s not spooled (%s): kept in memory only", ret.jid, exc)
            return False
        return True

    async def shutdown(self) -> None:
        """Give running jobs SHUTDOWN_GRACE_SECONDS, then stop the workers; a job still running is abandoned."""
        if self._running:
            log.info("waiting up to %.0f s for %d running jobs", SHUTDOWN_GRACE_SECONDS, len(self._running))
            _, pending = await asyncio.wait(self._running, timeout=SHUTDOWN_GRACE_SECONDS)
            if pending:
                log.warning("%d jobs still running are abandoned; the next start reports them interrupted",
                            len(pending))
        if self._owns_lanes:
            self._lanes.shutdown()


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


__all__ = ["KILLED", "TIMED_OUT", "Executor", "run_function"]
