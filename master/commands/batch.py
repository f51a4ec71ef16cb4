"""``run.batch``: a job rolled over the target's agents, at most N at a time (master/batch.py)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from saltmarsh.protocol.bounds import DEFAULT_RUN_TIMEOUT, MAX_BATCH_PAUSE
from saltmarsh.protocol.limits import MAX_FUNCTION_NAME
from saltmarsh.protocol.messages import Interval, Target
from saltmarsh.protocol.targeting import describe

from ..batch import BatchPlan, batch_size
from ..control_messages import BatchSize, BatchStarted
from ..errors import CommandError
from . import STREAM_GRACE_SECONDS, CommandContext, command, parse_args
from .jobs import unknown_ids


class BatchArgs(msgspec.Struct, forbid_unknown_fields=True):
    """What to run, where, how many at once, the pause after each, and whether a failure stops it."""

    fun: str
    target: Target
    batch: BatchSize
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    timeout: Interval = DEFAULT_RUN_TIMEOUT
    pause: Annotated[float, msgspec.Meta(ge=0, le=MAX_BATCH_PAUSE)] = 0.0
    fail_fast: bool = False


@command("run.batch")
async def run_batch(ctx: CommandContext, args: dict[str, Any]) -> BatchStarted:
    """Start a batch; the caller is subscribed to its events (``saltmarsh/batch/<batch>/``) before it runs.

    The agents the target names run one job each, ``batch`` of them at a time (a count, or a
    percentage of the expected agents, rounded down, at least 1), in id order; ``timeout`` is each
    job's deadline. Agents the master knows are down are not started (``offline``), nor are ids a
    list target names without an accepted key (``unknown``). The batch goes on if the caller leaves.
    """
    parsed = parse_args(args, BatchArgs)
    if not 0 < len(parsed.fun) <= MAX_FUNCTION_NAME:
        raise CommandError("function name is empty or too long")
    expected = ctx.master.jobs.expected_agents(parsed.target)
    if not expected:
        raise CommandError(f"no accepted agent matches target {describe(parsed.target)}")
    presence = ctx.master.presence
    offline = {agent: presence.why_silent(agent) for agent in expected if not presence.is_up(agent)}
    plan = BatchPlan(parsed.fun, parsed.args, parsed.kwargs, parsed.timeout,
                     sorted(agent for agent in expected if agent not in offline),
                     batch_size(parsed.batch, len(expected)), parsed.pause, parsed.fail_fast)
    ctx.subscribe(f"saltmarsh/batch/{plan.batch}/", plan.longest + STREAM_GRACE_SECONDS)
    ctx.master.batches.start(plan)
    return BatchStarted(plan.batch, expected, plan.size, plan.longest, offline,
                        unknown_ids(ctx, parsed.target, expected))
