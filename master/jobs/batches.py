"""Batches: run a job on at most N agents at a time, the next starting as one finishes.

A batch lives in the master, not in the CLI: it is a task on the master's loop, started by the
``run.batch`` command, so it goes on to the end when the CLI that started it goes away (Ctrl-C, a
closed ssh session) — a rollout over a fleet that stopped half-way because a laptop slept would
be the worst way to fail. Its progress is events, ``saltmarsh/batch/<batch>/…``
(protocol/tags.py: batch_tag), which the CLI streams and anyone can watch with ``saltmarsh
events``:

    start/<agent>   {id, jid}          the agent's own job went out (one job per agent, in the cache)
    ret/<agent>     the job's return   as ``saltmarsh/job/<jid>/ret/<agent>`` has it (redacted)
    silent/<agent>  {id, jid, reason}  no return within the job's deadline and grace
    done            {not_started: {agent: reason}}

Each of the ``size`` slots takes the next agent as soon as its last one answered (or stayed
silent) and ``pause`` seconds have passed. With ``fail_fast``, a failed return (TimedOut and
Killed included) or a silent agent stops every slot from starting another; the jobs already out
are awaited, and every agent left is reported as not started, with why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from saltmarsh.protocol.jids import new_jid
from saltmarsh.protocol.jobcontrol import RETURN_GRACE_SECONDS
from saltmarsh.protocol.messages import Target
from saltmarsh.protocol.tags import batch_tag

from ..agents.presence import Presence
from ..events.bus import Event, EventBus
from ..service.errors import Invalid, ServiceError
from ..service.types.jobs import BatchSize
from .router import JobRouter

log = logging.getLogger(__name__)


def batch_size(size: BatchSize, expected: int) -> int:
    """How many of ``expected`` agents run at once: ``count``, or ``percent`` of them rounded down, at least 1.

    Rounded down because a percentage is what an operator allows out of service at once (10 % of
    15 is 1, not 2), as Salt's ``-b 10%`` does; never 0, so a small fleet still makes progress.
    """
    if (size.count is None) == (size.percent is None):
        raise Invalid("a batch size is a count or a percentage, exactly one of them")
    if size.count is not None:
        wanted = size.count
    else:
        assert size.percent is not None
        # A hair under the exact product first: 29 % of 100 is 28.999… in floating point, and is 29.
        wanted = math.floor(expected * size.percent / 100 + 1e-9)
    return max(1, min(wanted, expected))


@dataclass
class BatchPlan:
    """What a batch runs and how: the job's parts, the agents in order, and the pacing."""

    fun: str
    args: list[Any]
    kwargs: dict[str, Any]
    timeout: float
    agents: list[str]
    size: int
    pause: float = 0.0
    fail_fast: bool = False
    batch: str = field(default_factory=new_jid)

    @property
    def longest(self) -> float:
        """The longest the batch can take: every round waiting out its deadline, grace and pause."""
        rounds = math.ceil(len(self.agents) / self.size) if self.agents else 0
        return rounds * (self.timeout + RETURN_GRACE_SECONDS + self.pause)


class Batch:
    """One batch running on the master's loop; ``run`` fires its events and returns at ``done``."""

    def __init__(self, plan: BatchPlan, jobs: JobRouter, bus: EventBus, presence: Presence) -> None:
        self.plan = plan
        self._jobs = jobs
        self._bus = bus
        self._presence = presence
        self._queue = deque(plan.agents)
        self._stopped_by = ""  # the agent whose failure stopped the batch (fail_fast)

    async def run(self) -> None:
        """Run every slot until the queue is empty (or the batch stopped), then fire ``done``."""
        log.info("batch %s: %s on %d agents, %d at a time", self.plan.batch, self.plan.fun,
                 len(self.plan.agents), self.plan.size)
        why = "the batch was cancelled (the master stopped)"
        try:
            async with asyncio.TaskGroup() as slots:  # a slot that fails stops the others
                for _ in range(self.plan.size):
                    slots.create_task(self._slot())
        except Exception:
            why = "the batch failed inside the master (see its log)"
            raise
        finally:
            if self._stopped_by:
                why = f"the batch stopped after {self._stopped_by} failed (--fail-fast)"
            not_started = {agent: why for agent in self._queue}
            self._bus.fire(batch_tag(self.plan.batch, "done"), {"not_started": not_started})

    async def _slot(self) -> None:
        while self._queue and not self._stopped_by:
            agent = self._queue.popleft()
            ok = await self._one(agent)
            if not ok and self.plan.fail_fast and not self._stopped_by:
                self._stopped_by = agent
            if self._queue and self.plan.pause and not self._stopped_by:
                await asyncio.sleep(self.plan.pause)

    async def _one(self, agent: str) -> bool:
        """Run the job on ``agent`` and wait for its return; True if it answered with success."""
        plan = self.plan
        if not self._presence.is_up(agent):
            return self._silent(agent, "", self._presence.why_silent(agent))
        try:
            job, expected = self._jobs.prepare(plan.fun, Target(kind="list", ids=[agent]), plan.args,
                                               plan.kwargs, plan.timeout)
        except ServiceError as exc:  # its key went meanwhile
            return self._silent(agent, "", str(exc))
        answer: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

        def answered(event: Event) -> None:
            if not answer.done():
                answer.set_result(event)

        handle = self._bus.subscribe(f"saltmarsh/job/{job.jid}/ret/", answered)
        try:
            self._bus.fire(batch_tag(plan.batch, "start", agent), {"id": agent, "jid": job.jid})
            await self._jobs.submit(job, expected)
            with contextlib.suppress(asyncio.TimeoutError):
                event = await asyncio.wait_for(answer, plan.timeout + RETURN_GRACE_SECONDS)
                self._bus.fire(batch_tag(plan.batch, "ret", agent), event.data, agent=agent)
                return bool(event.data["success"])
        finally:
            self._bus.unsubscribe(handle)
        return self._silent(agent, job.jid, self._presence.why_silent(agent))

    def _silent(self, agent: str, jid: str, reason: str) -> bool:
        self._bus.fire(batch_tag(self.plan.batch, "silent", agent), {"id": agent, "jid": jid, "reason": reason})
        return False


class Batches:
    """The batches running on this master: started by ``run.batch``, cancelled when the master stops."""

    def __init__(self, jobs: JobRouter, bus: EventBus, presence: Presence) -> None:
        self._jobs = jobs
        self._bus = bus
        self._presence = presence
        self._running: set[asyncio.Task[None]] = set()

    def start(self, plan: BatchPlan) -> None:
        """Start the batch on the running loop; it fires its events from the next turn on."""
        task = asyncio.create_task(Batch(plan, self._jobs, self._bus, self._presence).run(),
                                   name=f"batch-{plan.batch}")
        self._running.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("batch %s failed inside the master", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        """Cancel every running batch (each fires ``done``, naming what it never started)."""
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            with contextlib.suppress(asyncio.CancelledError):
                await task
