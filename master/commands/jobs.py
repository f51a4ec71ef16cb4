"""Job commands: run (streams the job's returns), job.list, job.show, job.silent."""

from __future__ import annotations

from typing import Any

import msgspec

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


class ListArgs(msgspec.Struct, forbid_unknown_fields=True):
    """How many jobs to list."""

    limit: int = 50


@command("run")
async def run(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Publish a job; the caller is subscribed to its returns before it goes out."""
    parsed = parse_args(args, RunArgs)
    if not 0 < len(parsed.fun) <= MAX_FUNCTION_NAME:
        raise CommandError("function name is empty or too long")
    job, expected = ctx.master.jobs.prepare(parsed.fun, parsed.target, parsed.args, parsed.kwargs, parsed.timeout)
    ctx.subscribe(f"saltmarsh/job/{job.jid}/ret/", parsed.timeout + STREAM_GRACE_SECONDS)
    await ctx.master.jobs.submit(job, expected)
    return {"jid": job.jid, "expected": expected}


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
