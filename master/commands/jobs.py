"""Job commands: run (streams the job's returns), job.list, job.show, job.silent."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from saltmarsh.pki.keystore import KeyState
from saltmarsh.protocol.codec import to_builtins
from saltmarsh.protocol.jids import jid_time
from saltmarsh.protocol.limits import MAX_FUNCTION_NAME
from saltmarsh.protocol.messages import Interval, Target

from ..errors import CommandError
from ..jobs import return_data
from . import STREAM_GRACE_SECONDS, CommandContext, command, parse_args


class RunArgs(msgspec.Struct, forbid_unknown_fields=True):
    """What to run, where, and how long the caller will wait."""

    fun: str
    target: Target
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    timeout: Interval = 30.0


class JidArgs(msgspec.Struct, forbid_unknown_fields=True):
    """A job id."""

    jid: str


MAX_LIST = 100_000  # jobs one job.list returns at most


class ListArgs(msgspec.Struct, forbid_unknown_fields=True):
    """How many jobs to list (1 to MAX_LIST)."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST)] = 50


@command("run")
async def run(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Publish a job; the caller is subscribed to its returns before it goes out.

    The reply names the job (``jid``), the agents expected to answer (``expected``), those
    of them the master knows are down (``offline``: not worth waiting for), and the ids a
    list target named that have no accepted key (``unknown``: the job was not sent to them),
    each with the reason.
    """
    parsed = parse_args(args, RunArgs)
    if not 0 < len(parsed.fun) <= MAX_FUNCTION_NAME:
        raise CommandError("function name is empty or too long")
    job, expected = ctx.master.jobs.prepare(parsed.fun, parsed.target, parsed.args, parsed.kwargs, parsed.timeout)
    presence = ctx.master.presence
    offline = {agent: presence.why_silent(agent) for agent in expected if not presence.is_up(agent)}
    ctx.subscribe(f"saltmarsh/job/{job.jid}/ret/", parsed.timeout + STREAM_GRACE_SECONDS)
    await ctx.master.jobs.submit(job, expected)
    return {"jid": job.jid, "expected": expected, "offline": offline, "unknown": _unknown(ctx, parsed.target, expected)}


def _unknown(ctx: CommandContext, target: Target, expected: list[str]) -> dict[str, str]:
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
    """A job, its expected agents, every return, and why each silent agent is silent."""
    jid = parse_args(args, JidArgs).jid
    record = ctx.master.cache.get_job(jid)
    if record is None:
        raise CommandError(f"no job {jid} in the job cache")
    returns = ctx.master.cache.returns(jid)
    return {
        "jid": jid,
        "fun": record.job.fun,
        "args": record.job.args,
        "kwargs": record.job.kwargs,
        "target": to_builtins(record.job.target),
        "created": jid_time(jid).isoformat(),
        "expected": record.expected,
        "returns": {agent: return_data(agent, ret) for agent, ret in returns.items()},
        "silent": ctx.master.jobs.why_silent(jid),
    }


@command("job.silent")
async def job_silent(ctx: CommandContext, args: dict[str, Any]) -> dict[str, str]:
    """Expected agents that have not answered a job, each with the reason."""
    return ctx.master.jobs.why_silent(parse_args(args, JidArgs).jid)
