"""``run.batch``: a job rolled over the target's agents, at most N at a time (master/jobs/batches.py runs it)."""

from __future__ import annotations

from saltmarsh.protocol.targeting import describe

from ..jobs.batches import BatchPlan, batch_size
from .errors import NotFound
from .jobs import check_function, offline_of, unknown_ids
from .registry import STREAM_GRACE_SECONDS, ServiceContext, operation
from .types.jobs import BatchRequest, BatchStarted


@operation(BatchRequest)
async def run_batch(ctx: ServiceContext, req: BatchRequest) -> BatchStarted:
    """Start a batch; the caller is watching its events (``saltmarsh/batch/<batch>/``) before it runs.

    The agents the target names run one job each, ``batch`` of them at a time (a count, or a
    percentage of the expected agents, rounded down, at least 1), in id order; ``timeout`` is each
    job's deadline. Agents the master knows are down are not started (``offline``), nor are ids a
    list target names without an accepted key (``unknown``). The batch goes on if the caller leaves.
    """
    check_function(req.fun)
    expected = ctx.master.jobs.expected_agents(req.target)
    if not expected:
        raise NotFound(f"no accepted agent matches target {describe(req.target)}")
    offline = offline_of(ctx, expected)
    plan = BatchPlan(req.fun, req.args, req.kwargs, req.timeout,
                     sorted(agent for agent in expected if agent not in offline),
                     batch_size(req.batch, len(expected)), req.pause, req.fail_fast)
    ctx.watch(f"saltmarsh/batch/{plan.batch}/", plan.longest + STREAM_GRACE_SECONDS)
    ctx.master.batches.start(plan)
    return BatchStarted(plan.batch, expected, plan.size, plan.longest, offline,
                        unknown_ids(ctx, req.target, expected))
