"""Jobs: run, wait, list, show, the outcome of a job, and job control (running, kill).

The rules of a job's completion live here and in types.JobOutcome: who is expected, who the
master knows will not answer (``offline``, ``unknown``), and at the end why each agent without a
return is missing (``job.outcome``), so every front end gives the same answer. Job control is
asked of the agents, which hold each job's deadline (protocol/jobcontrol.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from saltmarsh.pki.keystore import KeyState
from saltmarsh.protocol.codec import to_builtins
from saltmarsh.protocol.jids import jid_time
from saltmarsh.protocol.jobcontrol import RETURN_GRACE_SECONDS, KillReport, RunningJob
from saltmarsh.protocol.limits import MAX_FUNCTION_NAME
from saltmarsh.protocol.messages import Target

from ..jobs.router import return_data
from ..store.jobcache import JobRecord
from .errors import Conflict, Invalid, NotFound, ServiceError
from .registry import STREAM_GRACE_SECONDS, ServiceContext, operation
from .types import QUERY_TIMEOUT
from .types.jobs import (
    JobListRequest,
    JobOutcome,
    JobRequest,
    JobSilentRequest,
    JobStarted,
    JobSummary,
    JobView,
    KillReply,
    KillRequest,
    OutcomeRequest,
    RunningReply,
    RunningRequest,
    RunRequest,
    WaitRequest,
)

log = logging.getLogger(__name__)

EVERYONE = Target(kind="glob", pattern="*")


def check_function(fun: str) -> None:
    """Invalid unless ``fun`` is a function name of a length the agents take."""
    if not 0 < len(fun) <= MAX_FUNCTION_NAME:
        raise Invalid("function name is empty or too long")


def offline_of(ctx: ServiceContext, expected: list[str]) -> dict[str, str]:
    """The expected agents the master knows are down, each with since when: not worth waiting for."""
    presence = ctx.master.presence
    return {agent: presence.why_silent(agent) for agent in expected if not presence.is_up(agent)}


@operation(RunRequest)
async def run(ctx: ServiceContext, req: RunRequest) -> JobStarted:
    """Publish a job; unless ``wait`` is false, the caller is watching its returns before it goes out.

    The reply (JobStarted) names the job (``jid``), the agents expected to answer (``expected``),
    those of them the master knows are down (``offline``: not worth waiting for), and the ids a
    list target named that have no accepted key (``unknown``: the job was not sent to them),
    each with the reason. ``timeout`` is the job's deadline on each agent.
    """
    check_function(req.fun)
    job, expected = ctx.master.jobs.prepare(req.fun, req.target, req.args, req.kwargs, req.timeout)
    offline = offline_of(ctx, expected)
    if req.wait:
        ctx.watch(f"saltmarsh/job/{job.jid}/ret/", req.timeout + RETURN_GRACE_SECONDS + STREAM_GRACE_SECONDS)
    await ctx.master.jobs.submit(job, expected)
    return JobStarted(job.jid, expected, offline, unknown_ids(ctx, req.target, expected))


@operation(WaitRequest)
async def wait(ctx: ServiceContext, req: WaitRequest) -> JobStarted:
    """Watch a job's returns from now on; the reply holds those the cache has already.

    ``wait`` in the reply is how long the caller should wait for the rest: ``timeout`` if given,
    else until the job's deadline has passed on every agent (by then each agent that is up has
    answered, if only with TimedOut). Agents without a return that are down are in ``offline``.
    """
    record = job_record(ctx, req.jid)
    returns = ctx.master.cache.returns(req.jid)
    left = record.created + record.job.timeout + RETURN_GRACE_SECONDS - time.time()
    seconds = req.timeout if req.timeout is not None else max(0.0, left)
    offline = offline_of(ctx, [agent for agent in record.expected if agent not in returns])
    # Watched in the same turn of the loop as the cache was read: no return falls between.
    ctx.watch(f"saltmarsh/job/{req.jid}/ret/", seconds + STREAM_GRACE_SECONDS)
    return JobStarted(req.jid, record.expected, offline, unknown_ids(ctx, record.job.target, record.expected),
                      {agent: return_data(agent, ret) for agent, ret in returns.items()}, seconds)


@operation(OutcomeRequest)
async def outcome(ctx: ServiceContext, req: OutcomeRequest) -> JobOutcome:
    """What came of a job so far: every return the cache holds, and why each agent without one has none.

    What a front end asks once its wait is over (every awaited agent answered, or its time ran
    out): ``missing``, ``complete`` and ``timed_out`` of the result follow from it (types.JobOutcome).
    ``offline`` is, of the agents without a return, those the master knows are down now.
    """
    record = job_record(ctx, req.jid)
    returns = ctx.master.cache.returns(req.jid)
    unanswered = [agent for agent in record.expected if agent not in returns]
    return JobOutcome(jid=req.jid, expected=record.expected,
                      returns={agent: return_data(agent, ret) for agent, ret in returns.items()},
                      silent=ctx.master.jobs.why_silent(req.jid),
                      offline=offline_of(ctx, unanswered),
                      unknown=unknown_ids(ctx, record.job.target, record.expected))


@operation(RunningRequest)
async def running(ctx: ServiceContext, req: RunningRequest) -> RunningReply:
    """Every job the target's agents hold (queued, running, abandoned), asked of the agents themselves."""
    returns, missing = await ctx.master.jobs.ask(req.target or EVERYONE, "job.running", {}, req.timeout)
    held: dict[str, list[RunningJob]] = {}
    for agent, ret in sorted(returns.items()):
        jobs = agent_result(agent, ret, list[RunningJob], missing)
        if jobs is not None:
            held[agent] = jobs
    return RunningReply(held, missing)


@operation(KillRequest)
async def kill(ctx: ServiceContext, req: KillRequest) -> KillReply:
    """Kill a job on ``target``, or on every expected agent that has not answered it; each says what it did."""
    target = req.target
    if target is None:
        record = job_record(ctx, req.jid)
        answered = ctx.master.cache.returns(req.jid)
        still = [agent for agent in record.expected if agent not in answered]
        if not still:
            raise Conflict(f"job {req.jid} is not running anywhere: every expected agent answered it")
        target = Target(kind="list", ids=still)
    returns, missing = await ctx.master.jobs.ask(target, "job.kill", {"jid": req.jid}, req.timeout)
    reports: dict[str, KillReport] = {}
    for agent, ret in sorted(returns.items()):
        report = agent_result(agent, ret, KillReport, missing)
        if report is not None:
            reports[agent] = report
    return KillReply(req.jid, reports, missing)


def agent_result(agent: str, ret: dict[str, Any], kind: Any, missing: dict[str, str]) -> Any:
    """An agent's result as ``kind``; None (and the reason in ``missing``) if it failed or does not fit."""
    if not ret["success"]:
        error = ret.get("error") or {}
        missing[agent] = f"{ret['fun']} failed there: {error.get('type', '?')}: {error.get('message', '')}"
        return None
    try:
        return msgspec.convert(ret["result"], type=kind)
    except msgspec.ValidationError as exc:
        log.warning("%s answered %s with a result that does not fit its schema: %s", agent, ret["fun"], exc)
        missing[agent] = f"answered {ret['fun']} with a malformed result"
        return None


def job_record(ctx: ServiceContext, jid: str) -> JobRecord:
    """The job cache's record of ``jid``; NotFound if it has none."""
    record = ctx.master.cache.get_job(jid)
    if record is None:
        raise NotFound(f"no job {jid} in the job cache")
    return record


def unknown_ids(ctx: ServiceContext, target: Target, expected: list[str]) -> dict[str, str]:
    """The ids an id or list target names that are not expected, each with why."""
    if target.kind not in ("id", "list"):
        return {}
    store = ctx.master.keys.store
    unknown = {}
    for agent_id in sorted(set(target.ids) - set(expected)):
        record = store.get(agent_id)
        if record is None:
            unknown[agent_id] = "no such agent (no key by that id)"
        elif record.state is not KeyState.ACCEPTED:
            unknown[agent_id] = f"key not accepted (it is {record.state.value})"
    return unknown


@operation(JobListRequest)
async def job_list(ctx: ServiceContext, req: JobListRequest) -> list[JobSummary]:
    """The newest jobs with counts of expected agents and returns."""
    return msgspec.convert(ctx.master.cache.list_jobs(req.limit), type=list[JobSummary])


@operation(JobRequest)
async def show(ctx: ServiceContext, req: JobRequest) -> JobView:
    """A job, its expected agents, every return, and why each silent agent is silent.

    Until the job's deadline has passed, the silent agents that are up are asked whether they
    still run it (``job.running``); ``running`` holds what those that do said.
    """
    record = job_record(ctx, req.jid)
    returns = ctx.master.cache.returns(req.jid)
    silent = ctx.master.jobs.why_silent(req.jid)
    still = await _still_running(ctx, record, silent)
    for agent, job in still.items():
        silent[agent] = (f"still running there ({job.state}, for {job.elapsed:.1f} s, "
                         f"{job.deadline:.1f} s to its deadline)")
    return JobView(req.jid, record.job.fun, record.job.args, record.job.kwargs, to_builtins(record.job.target),
                   jid_time(req.jid).isoformat(), record.expected,
                   {agent: return_data(agent, ret) for agent, ret in returns.items()}, silent,
                   {agent: to_builtins(job) for agent, job in still.items()})


async def _still_running(ctx: ServiceContext, record: JobRecord, silent: dict[str, str]) -> dict[str, RunningJob]:
    """Which silent agents still run the job, by their own word (asked only before its deadline)."""
    up = [agent for agent in silent if ctx.master.presence.is_up(agent)]
    if not up or time.time() > record.created + record.job.timeout + RETURN_GRACE_SECONDS:
        return {}
    try:
        returns, _missing = await ctx.master.jobs.ask(Target(kind="list", ids=up), "job.running", {}, QUERY_TIMEOUT)
    except ServiceError:
        return {}  # their keys went meanwhile: nobody left to ask
    still = {}
    for agent, ret in returns.items():
        jobs = agent_result(agent, ret, list[RunningJob], {})
        for job in jobs or []:
            if job.jid == record.job.jid and job.state != "abandoned":
                still[agent] = job
    return still


@operation(JobSilentRequest)
async def silent(ctx: ServiceContext, req: JobSilentRequest) -> dict[str, str]:
    """Expected agents that have not answered a job, each with the reason."""
    return ctx.master.jobs.why_silent(req.jid)
