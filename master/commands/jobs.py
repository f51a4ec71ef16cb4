"""Job commands: run (streams the job's returns), job.list, job.show, job.silent, and job control:
job.wait (a job's returns, streamed), job.running and job.kill (asked of the agents, which hold
each job's deadline: protocol/jobcontrol.py).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import msgspec

from saltmarsh.pki.keystore import KeyState
from saltmarsh.protocol.bounds import DEFAULT_RUN_TIMEOUT
from saltmarsh.protocol.codec import to_builtins
from saltmarsh.protocol.jids import jid_time
from saltmarsh.protocol.jobcontrol import RETURN_GRACE_SECONDS, KillReport, RunningJob
from saltmarsh.protocol.limits import MAX_FUNCTION_NAME
from saltmarsh.protocol.messages import Interval, Jid, Target

from ..control_messages import JobStarted, KillReply, RunningReply
from ..errors import CommandError
from ..jobcache import JobRecord
from ..jobs import return_data
from . import STREAM_GRACE_SECONDS, CommandContext, command, parse_args

log = logging.getLogger(__name__)

# How long job.running, job.kill and job.show wait for the agents they ask (they answer from
# their quick lane, in milliseconds, even with every worker stuck).
QUERY_TIMEOUT = 5.0
EVERYONE = Target(kind="glob", pattern="*")


class RunArgs(msgspec.Struct, forbid_unknown_fields=True):
    """What to run, where, and how long the caller will wait."""

    fun: str
    target: Target
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    timeout: Interval = DEFAULT_RUN_TIMEOUT
    wait: bool = True  # False (run --async): publish only, stream nothing back


class JidArgs(msgspec.Struct, forbid_unknown_fields=True):
    """A job id."""

    jid: str


class WaitArgs(msgspec.Struct, forbid_unknown_fields=True):
    """A job to wait for; ``timeout`` None waits until the job's own deadline has passed."""

    jid: Jid
    timeout: Interval | None = None


class RunningArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Whose running jobs to list (everyone by default)."""

    target: Target | None = None
    timeout: Interval = QUERY_TIMEOUT


class KillArgs(msgspec.Struct, forbid_unknown_fields=True):
    """A job to kill, on ``target`` or else on every expected agent that has not answered it."""

    jid: Jid
    target: Target | None = None
    timeout: Interval = QUERY_TIMEOUT


MAX_LIST = 100_000  # jobs one job.list returns at most


class ListArgs(msgspec.Struct, forbid_unknown_fields=True):
    """How many jobs to list (1 to MAX_LIST)."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST)] = 50


@command("run")
async def run(ctx: CommandContext, args: dict[str, Any]) -> JobStarted:
    """Publish a job; unless ``wait`` is false, the caller is subscribed to its returns before it goes out.

    The reply (JobStarted) names the job (``jid``), the agents expected to answer (``expected``),
    those of them the master knows are down (``offline``: not worth waiting for), and the ids a
    list target named that have no accepted key (``unknown``: the job was not sent to them),
    each with the reason. ``timeout`` is the job's deadline on each agent.
    """
    parsed = parse_args(args, RunArgs)
    if not 0 < len(parsed.fun) <= MAX_FUNCTION_NAME:
        raise CommandError("function name is empty or too long")
    job, expected = ctx.master.jobs.prepare(parsed.fun, parsed.target, parsed.args, parsed.kwargs, parsed.timeout)
    presence = ctx.master.presence
    offline = {agent: presence.why_silent(agent) for agent in expected if not presence.is_up(agent)}
    if parsed.wait:
        ctx.subscribe(f"saltmarsh/job/{job.jid}/ret/", parsed.timeout + RETURN_GRACE_SECONDS + STREAM_GRACE_SECONDS)
    await ctx.master.jobs.submit(job, expected)
    return JobStarted(job.jid, expected, offline, unknown_ids(ctx, parsed.target, expected))


@command("job.wait")
async def job_wait(ctx: CommandContext, args: dict[str, Any]) -> JobStarted:
    """Stream a job's returns from now on; the reply holds those the cache has already.

    ``wait`` in the reply is how long the caller should wait for the rest: ``timeout`` if given,
    else until the job's deadline has passed on every agent (by then each agent that is up has
    answered, if only with TimedOut). Agents without a return that are down are in ``offline``.
    """
    parsed = parse_args(args, WaitArgs)
    record = _record(ctx, parsed.jid)
    returns = ctx.master.cache.returns(parsed.jid)
    left = record.created + record.job.timeout + RETURN_GRACE_SECONDS - time.time()
    wait = parsed.timeout if parsed.timeout is not None else max(0.0, left)
    presence = ctx.master.presence
    offline = {agent: presence.why_silent(agent) for agent in record.expected
               if agent not in returns and not presence.is_up(agent)}
    # Subscribed in the same turn of the loop as the cache was read: no return falls between.
    ctx.subscribe(f"saltmarsh/job/{parsed.jid}/ret/", wait + STREAM_GRACE_SECONDS)
    return JobStarted(parsed.jid, record.expected, offline, unknown_ids(ctx, record.job.target, record.expected),
                      {agent: return_data(agent, ret) for agent, ret in returns.items()}, wait)


@command("job.running")
async def job_running(ctx: CommandContext, args: dict[str, Any]) -> RunningReply:
    """Every job the target's agents hold (queued, running, abandoned), asked of the agents themselves."""
    parsed = parse_args(args, RunningArgs)
    returns, missing = await ctx.master.jobs.ask(parsed.target or EVERYONE, "job.running", {}, parsed.timeout)
    running: dict[str, list[RunningJob]] = {}
    for agent, ret in sorted(returns.items()):
        jobs = _agent_result(agent, ret, list[RunningJob], missing)
        if jobs is not None:
            running[agent] = jobs
    return RunningReply(running, missing)


@command("job.kill")
async def job_kill(ctx: CommandContext, args: dict[str, Any]) -> KillReply:
    """Kill a job on ``target``, or on every expected agent that has not answered it; each says what it did."""
    parsed = parse_args(args, KillArgs)
    target = parsed.target
    if target is None:
        record = _record(ctx, parsed.jid)
        answered = ctx.master.cache.returns(parsed.jid)
        still = [agent for agent in record.expected if agent not in answered]
        if not still:
            raise CommandError(f"job {parsed.jid} is not running anywhere: every expected agent answered it")
        target = Target(kind="list", ids=still)
    returns, missing = await ctx.master.jobs.ask(target, "job.kill", {"jid": parsed.jid}, parsed.timeout)
    reports: dict[str, KillReport] = {}
    for agent, ret in sorted(returns.items()):
        report = _agent_result(agent, ret, KillReport, missing)
        if report is not None:
            reports[agent] = report
    return KillReply(parsed.jid, reports, missing)


def _agent_result(agent: str, ret: dict[str, Any], kind: Any, missing: dict[str, str]) -> Any:
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


def _record(ctx: CommandContext, jid: str) -> JobRecord:
    record = ctx.master.cache.get_job(jid)
    if record is None:
        raise CommandError(f"no job {jid} in the job cache")
    return record


def unknown_ids(ctx: CommandContext, target: Target, expected: list[str]) -> dict[str, str]:
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


@command("job.list")
async def job_list(ctx: CommandContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    """The newest jobs with counts of expected agents and returns."""
    return ctx.master.cache.list_jobs(parse_args(args, ListArgs).limit)


@command("job.show")
async def job_show(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """A job, its expected agents, every return, and why each silent agent is silent.

    Until the job's deadline has passed, the silent agents that are up are asked whether they
    still run it (``job.running``); ``running`` holds what those that do said.
    """
    jid = parse_args(args, JidArgs).jid
    record = _record(ctx, jid)
    returns = ctx.master.cache.returns(jid)
    silent = ctx.master.jobs.why_silent(jid)
    running = await _still_running(ctx, record, silent)
    for agent, job in running.items():
        silent[agent] = (f"still running there ({job.state}, for {job.elapsed:.1f} s, "
                         f"{job.deadline:.1f} s to its deadline)")
    return {
        "jid": jid,
        "fun": record.job.fun,
        "args": record.job.args,
        "kwargs": record.job.kwargs,
        "target": to_builtins(record.job.target),
        "created": jid_time(jid).isoformat(),
        "expected": record.expected,
        "returns": {agent: return_data(agent, ret) for agent, ret in returns.items()},
        "silent": silent,
        "running": {agent: to_builtins(job) for agent, job in running.items()},
    }


async def _still_running(ctx: CommandContext, record: JobRecord, silent: dict[str, str]) -> dict[str, RunningJob]:
    """Which silent agents still run the job, by their own word (asked only before its deadline)."""
    up = [agent for agent in silent if ctx.master.presence.is_up(agent)]
    if not up or time.time() > record.created + record.job.timeout + RETURN_GRACE_SECONDS:
        return {}
    try:
        returns, _missing = await ctx.master.jobs.ask(Target(kind="list", ids=up), "job.running", {}, QUERY_TIMEOUT)
    except CommandError:
        return {}  # their keys went meanwhile: nobody left to ask
    running = {}
    for agent, ret in returns.items():
        jobs = _agent_result(agent, ret, list[RunningJob], {})
        for job in jobs or []:
            if job.jid == record.job.jid and job.state != "abandoned":
                running[agent] = job
    return running


@command("job.silent")
async def job_silent(ctx: CommandContext, args: dict[str, Any]) -> dict[str, str]:
    """Expected agents that have not answered a job, each with the reason."""
    return ctx.master.jobs.why_silent(parse_args(args, JidArgs).jid)
