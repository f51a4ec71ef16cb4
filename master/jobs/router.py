"""Jobs: targeting, recording, publishing, and gathering returns into the cache and the bus.

The cache and the bus get jobs and returns with their secrets redacted
(protocol/redaction.py); only the master's own callers of ``run_and_wait``
(``virt vnc`` needs the console password) see a live return whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from saltmarsh.pki.keystore import KeyState
from saltmarsh.protocol.jids import new_jid
from saltmarsh.protocol.jobcontrol import RETURN_GRACE_SECONDS
from saltmarsh.protocol.messages import Ack, Job, JobReturn, Returns, Target
from saltmarsh.protocol.redaction import holds_secret, redact
from saltmarsh.protocol.tags import job_new_tag, job_ret_tag
from saltmarsh.protocol.targeting import describe, is_everyone, matches

from ..agents.keys import KeyManager
from ..agents.presence import Presence
from ..events.bus import EventBus
from ..service.errors import NotFound
from ..store.jobcache import JobCache
from ..wire.publisher import Publisher
from ..wire.request_channel import Request
from .groupcommit import ReturnCommits

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
        self._commits = ReturnCommits(cache)  # returns of one turn of the loop, in one transaction
        # jid -> who waits for its whole returns (run_and_wait); never the bus, which shows them redacted.
        self._waiters: dict[str, Callable[[dict[str, Any]], None]] = {}

    def expected_agents(self, target: Target) -> list[str]:
        """Accepted agents the target names (labels as last reported by each agent), sorted."""
        store = self._keys.store
        if target.kind in ("id", "list"):
            # Looked up, not matched against every key: the master's own jobs for one agent (and
            # ``ask`` for every agent that is up) would otherwise cost O(fleet) each.
            return sorted({agent_id for agent_id in target.ids if store.accepted_key(agent_id) is not None})
        return [
            agent_id
            for agent_id in store.ids(KeyState.ACCEPTED)
            if matches(target, agent_id, self._presence.labels(agent_id))
        ]

    def prepare(
        self, fun: str, target: Target, args: list[Any], kwargs: dict[str, Any], timeout: float
    ) -> tuple[Job, list[str]]:
        """Build a job and its expected agents; NotFound if nobody matches."""
        expected = self.expected_agents(target)
        if not expected:
            raise NotFound(f"no accepted agent matches target {describe(target)}")
        job = Job(jid=new_jid(), fun=fun, target=target, args=args, kwargs=kwargs, timeout=timeout)
        return job, expected

    async def submit(self, job: Job, expected: list[str]) -> None:
        """Record the job, announce it, and publish it."""
        self._cache.add_job(redacted_job(job), expected)
        self._bus.fire(job_new_tag(job.jid), {"jid": job.jid, "fun": job.fun, "expected": expected})
        await self._publisher.publish(job, None if is_everyone(job.target) else self._recipients(expected))
        log.info("job %s %s published to %s", job.jid, job.fun, describe(job.target))

    def _recipients(self, expected: list[str]) -> dict[str, bytes]:
        """The accepted public key of each expected agent (one deleted meanwhile gets nothing)."""
        keys = {agent_id: self._keys.store.accepted_key(agent_id) for agent_id in expected}
        return {agent_id: key for agent_id, key in keys.items() if key is not None}

    async def on_returns(self, req: Request) -> Ack:
        """Persist returns, then acknowledge them (duplicates are acknowledged, not stored twice)."""
        assert isinstance(req.body, Returns)
        self._presence.seen(req.agent_id, req.routing_id)
        whole = {ret.jid: ret for ret in req.body.returns}
        fresh, unexpected = await self._commits.add(req.agent_id, [redacted_return(r) for r in req.body.returns])
        for jid in unexpected:
            log.warning("refused return from %s for job %s, which was not sent to it", req.agent_id, jid)
        for ret in fresh:
            waiter = self._waiters.get(ret.jid)
            if waiter is not None:
                waiter(return_data(req.agent_id, whole[ret.jid]))
            self._bus.fire(job_ret_tag(ret.jid, req.agent_id), return_data(req.agent_id, ret), agent=req.agent_id)
        return Ack(jids=[r.jid for r in req.body.returns])

    async def run_and_wait(
        self, target: Target, fun: str, kwargs: dict[str, Any], timeout: float
    ) -> tuple[str, dict[str, dict[str, Any]]]:
        """Run a job for the master's own use and wait for the returns (or the timeout).

        ``timeout`` is the job's deadline on each agent; the wait lasts RETURN_GRACE_SECONDS
        longer, so that an agent's own TimedOut return (sent at the deadline) is among the
        returns rather than lost in a race with it. The returns come whole, secrets included:
        the caller decides what it shows.
        """
        job, expected = self.prepare(fun, target, [], kwargs, timeout)
        returns: dict[str, dict[str, Any]] = {}
        complete = asyncio.Event()

        def collect(data: dict[str, Any]) -> None:
            returns[data["id"]] = data
            if set(expected) <= set(returns):
                complete.set()

        self._waiters[job.jid] = collect
        try:
            await self.submit(job, expected)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(complete.wait(), timeout + RETURN_GRACE_SECONDS)
        finally:
            del self._waiters[job.jid]
        return job.jid, returns

    async def ask(
        self, target: Target, fun: str, kwargs: dict[str, Any], timeout: float
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Run ``fun`` on the target's agents that are up; their returns, and why each other one has none.

        Agents the master knows are down are not sent the job (nor waited for), so a query of
        the whole fleet costs the time of the slowest agent that is up, never the timeout.
        """
        expected = self.expected_agents(target)
        if not expected:
            raise NotFound(f"no accepted agent matches target {describe(target)}")
        missing = {agent: self._presence.why_silent(agent) for agent in expected if not self._presence.is_up(agent)}
        up = [agent for agent in expected if agent not in missing]
        if not up:
            return {}, missing
        _jid, returns = await self.run_and_wait(Target(kind="list", ids=up), fun, kwargs, timeout)
        missing.update({agent: self._presence.why_silent(agent) for agent in up if agent not in returns})
        return returns, missing

    def why_silent(self, jid: str) -> dict[str, str]:
        """For each expected agent that has not answered ``jid``, why."""
        record = self._cache.get_job(jid)
        if record is None:
            raise NotFound(f"no job {jid}")
        answered = self._cache.returns(jid)
        return {a: self._presence.why_silent(a) for a in record.expected if a not in answered}


def redacted_job(job: Job) -> Job:
    """``job`` as the cache may keep it: secret arguments redacted."""
    if not (holds_secret(job.kwargs) or holds_secret(job.args)):
        return job
    return msgspec.structs.replace(job, args=redact(job.args), kwargs=redact(job.kwargs))


def redacted_return(ret: JobReturn) -> JobReturn:
    """``ret`` as the cache and the bus may show it: secrets in its result redacted."""
    return msgspec.structs.replace(ret, result=redact(ret.result)) if holds_secret(ret.result) else ret


def return_data(agent_id: str, ret: JobReturn) -> dict[str, Any]:
    """The event data of a return (also what ``job show`` prints per agent)."""
    data: dict[str, Any] = {"id": agent_id, "jid": ret.jid, "fun": ret.fun, "success": ret.success,
                            "result": ret.result, "duration": ret.duration}
    if ret.error is not None:
        data["error"] = {"type": ret.error.type, "message": ret.error.message}
    return data
