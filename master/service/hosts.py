"""Hypervisors as hosts: maintenance, role (hypervisor or guest), and host setup (streamed per state)."""

from __future__ import annotations

from typing import Any

from saltmarsh.protocol.states import host_setup_tag

from .registry import STREAM_GRACE_SECONDS, ServiceContext, operation
from .types.hosts import MaintenanceRequest, MaintenanceState, RoleRequest, RoleState, SetupRequest


@operation(MaintenanceRequest)
async def maintenance(ctx: ServiceContext, req: MaintenanceRequest) -> MaintenanceState:
    """Put a hypervisor in or out of maintenance (placement skips it)."""
    return MaintenanceState(req.host, ctx.master.controller.maintenance(req.host, req.state == "on"))


@operation(RoleRequest)
async def role(ctx: ServiceContext, req: RoleRequest) -> RoleState:
    """Make an accepted agent a hypervisor (listed, placed on) or a guest (neither)."""
    await ctx.master.controller.set_role(req.id, req.role)
    return RoleState(req.id, req.role)


@operation(SetupRequest)
async def setup(ctx: ServiceContext, req: SetupRequest) -> dict[str, Any]:
    """Bring the targeted hosts to their profiles (dry_run: only say what would change); per host, each state.

    The caller watches ``saltmarsh/host/<id>/setup/<state>`` of the targeted hosts as they come.
    """
    service = ctx.master.host_setup
    plan = service.plan(req.target, req.profile)
    for host in plan.hosts:
        ctx.watch(host_setup_tag(host, ""), req.timeout + STREAM_GRACE_SECONDS)
    return await service.run(plan, req.dry_run, req.timeout)
