"""Jobs: targeting, recording, publishing, and gathering returns into the cache and the bus."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from saltmarsh.pki.keystore import KeyState
from saltmarsh.protocol.jids import new_jid
from saltmarsh.protocol.messages import Ack, Job, JobReturn, Returns, Target
from saltmarsh.protocol.tags import job_new_tag, job_ret_tag
from saltmarsh.protocol.targeting import describe, matches

from .errors import CommandError
from .eventbus import Event, EventBus
from .jobcache import JobCache
from .keys import KeyManager
from .presence import Presence
from .publisher import Publisher
from .request_channel import Request

log = logging.getLogger(__name__)


class JobRouter:
    """Creates jobs for targets and records what comes back."""

    def __init__(
        self, cache: JobCache, bus: EventBus, publisher: Publisher, presence: Presence, keys: KeyManager
    ) -> None:
        self._cache = cache
        self._bus = bus
        self._publisher = publisher
        self._presence = presence
        self._keys = keys

    def expected_agents(self, target: Target) -> list[str]:
        """Accepted agents the target names (labels as last reported by each agent)."""
        return [
            agent_id
            for agent_id in self._keys.store.ids(KeyState.ACCEPTED)
            if matches(target, agent_id, self._presence.labels(agent_id))
        ]

    def prepare(
        self, fun: str, target: Target, args: list[Any], kwargs: dict[str, Any], timeout: float
    ) -> tuple[Job, list[str]]:
        """Build a job and its expected agents; CommandError if nobody matches."""
        expected = self.expected_agents(target)
        if not expected:
            raise CommandError(f"no accepted agent matches target {describe(target)}")
        job = Job(jid=new_jid(), fun=fun, target=target, args=args, kwargs=kwargs, timeout=timeout)
        return job, expected

    async def submit(self, job: Job, expected: list[str]) -> None:
        """Record the job, announce it, and publish it."""
        self._cache.add_job(job, expected)
        self._bus.fire(job_new_tag(job.jid), {"jid": job.jid, "fun": job.fun, "expected": expected})
        named = expected if job.target.kind in ("id", "list") else None
        await self._publisher.publish(job, named)
        log.info("job %s %s published to %s", job.jid, job.fun, describe(job.target))

    async def on_returns(self, req: Request) -> Ack:
        """Persist returns, then acknowledge them (duplicates are acknowledged, not stored twice)."""
        assert isinstance(req.body, Returns)
        self._presence.seen(req.agent_id, req.routing_id)
        fresh, unexpected = self._cache.add_returns(req.agent_id, req.body.returns)
        for jid in unexpected:
            log.warning("refused return from %s for job %s, which was not sent to it", req.agent_id, jid)
        for ret in fresh:
            self._bus.fire(job_ret_tag(ret.jid, req.agent_id), return_data(req.agent_id, ret), agent=req.agent_id)
        return Ack(jids=[r.jid for r in req.body.returns])

    async def run_and_wait(
        self, target: Target, fun: str, kwargs: dict[str, Any], timeout: float
    ) -> tuple[str, dict[str, dict[str, Any]]]:
        """Run a job for the master's own use and wait for the returns (or the timeout)."""
        job, expected = self.prepare(fun, target, [], kwargs, timeout)
        returns: dict[str, dict[str, Any]] = {}
        complete = asyncio.Event()

        def collect(event: Event) -> None:
            returns[event.data["id"]] = event.data
            if set(expected) <= set(returns):
                complete.set()

        handle = self._bus.subscribe(f"saltmarsh/job/{job.jid}/ret/", collect)
        try:
            await self.submit(job, expected)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(complete.wait(), timeout)
        finally:
            self._bus.unsubscribe(handle)
        return job.jid, returns

    def why_silent(self, jid: str) -> dict[str, str]:
        """For each expected agent that has not answered ``jid``, why."""
        record = self._cache.get_job(jid)
        if record is None:
            raise CommandError(f"no job {jid}")
        answered = self._cache.returns(jid)
        return {a: self._presence.why_silent(a) for a in record.expected if a not in answered}


def return_data(agent_id: str, ret: JobReturn) -> dict[str, Any]:
    """The event data of a return (also what ``job show`` prints per agent)."""
    data: dict[str, Any] = {"id": agent_id, "jid": ret.jid, "fun": ret.fun, "success": ret.success,
                            "result": ret.result, "duration": ret.duration}
    if ret.error is not None:
        data["error"] = {"type": ret.error.type, "message": ret.error.message}
    return data
