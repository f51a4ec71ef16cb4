"""The fleet view: ``agent.list`` and ``agent.show``, from what the master knows and what the agents say.

Keys (pki/keystore.py), presence (master/agents/presence.py: up/down, since, last seen, labels, version,
address), the inventory (master/cloud/inventory.py: libvirt available, maintenance) are the master's own;
how many jobs each agent holds is asked of the agents that are up (``job.running``, in their quick
lane), so it is their word, not a guess from the job cache.
"""

from __future__ import annotations

import msgspec

from saltmarsh.pki.keystore import AgentKey, KeyState
from saltmarsh.protocol.jobcontrol import RunningJob
from saltmarsh.protocol.messages import Target
from saltmarsh.protocol.targeting import describe, matches

from .errors import NotFound, ServiceError
from .registry import ServiceContext, operation
from .types.agents import AgentListRequest, AgentShowRequest, AgentStatus, AgentView


@operation(AgentListRequest)
async def agent_list(ctx: ServiceContext, req: AgentListRequest) -> list[AgentView]:
    """Every agent with a key (pending, accepted or rejected) that ``target`` names, sorted by id.

    NotFound if a target is given and names none: a mistyped target is told, not shown as no agents.
    """
    keys = [key for key in ctx.master.keys.store.all()
            if req.target is None or matches(req.target, key.agent_id, ctx.master.presence.labels(key.agent_id))]
    if req.target is not None and not keys:
        raise NotFound(f"no agent matches target {describe(req.target)}")
    return await _views(ctx, sorted(keys, key=lambda key: key.agent_id), req.timeout)


@operation(AgentShowRequest)
async def agent_show(ctx: ServiceContext, req: AgentShowRequest) -> AgentView:
    """One agent as ``agent.list`` shows it; NotFound if no key has that id."""
    key = ctx.master.keys.store.get(req.id)
    if key is None:
        raise NotFound(f"no agent {req.id!r} (no key by that id)")
    return (await _views(ctx, [key], req.timeout))[0]


async def _views(ctx: ServiceContext, keys: list[AgentKey], timeout: float) -> list[AgentView]:
    counts = await _job_counts(ctx, [key.agent_id for key in keys if key.state is KeyState.ACCEPTED], timeout)
    return [_view(ctx, key, counts.get(key.agent_id)) for key in keys]


def _view(ctx: ServiceContext, key: AgentKey, counts: tuple[int, int] | str | None) -> AgentView:
    master = ctx.master
    state = master.presence.get(key.agent_id)
    connected = state is not None and state.first_seen > 0
    host = master.inventory.get(key.agent_id)
    running, abandoned = counts if isinstance(counts, tuple) else (None, None)
    status: AgentStatus
    since: float | None
    if state is not None and state.up:
        status, since = "up", state.up_since
    elif connected:
        assert state is not None
        status, since = "down", state.down_since or state.last_seen
    else:
        status, since = "never connected", None
    return AgentView(
        id=key.agent_id, key=key.state.value, state=status, since=since,
        last_seen=state.last_seen if connected and state else None,
        first_seen=state.first_seen if connected and state else None,
        labels=dict(state.labels) if state else {}, version=state.version if state else "",
        address=state.address if state else "",
        role="guest" if master.keys.is_guest(key.agent_id) else "hypervisor", fingerprint=key.fingerprint,
        running=running, abandoned=abandoned, running_note=counts if isinstance(counts, str) else "",
        libvirt=host.available if host else None, libvirt_error=host.error if host else "",
        maintenance=host.maintenance if host else False,
    )


async def _job_counts(ctx: ServiceContext, accepted: list[str], timeout: float) -> dict[str, tuple[int, int] | str]:
    """Per agent: (jobs queued or running, abandoned threads) by its own word, or why it is not known."""
    presence = ctx.master.presence
    counts: dict[str, tuple[int, int] | str] = {}
    up = [agent for agent in accepted if presence.is_up(agent)]
    if not up:
        return counts
    try:
        returns, missing = await ctx.master.jobs.ask(Target(kind="list", ids=up), "job.running", {}, timeout)
    except ServiceError:
        return counts  # their keys went meanwhile: nobody left to ask
    for agent, ret in returns.items():
        try:
            jobs = msgspec.convert(ret["result"], type=list[RunningJob]) if ret["success"] else None
        except msgspec.ValidationError:
            jobs = None
        if jobs is None:
            counts[agent] = "its answer to job.running was an error or malformed"
            continue
        abandoned = sum(job.state == "abandoned" for job in jobs)
        counts[agent] = (len(jobs) - abandoned, abandoned)
    counts.update(missing)
    return counts
