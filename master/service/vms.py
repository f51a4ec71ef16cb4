"""The cloud controller's operations: host info, list, query, init, operations by name, console, migration."""

from __future__ import annotations

from typing import Any

from ..cloud.controller import MAX_VM_CPUS, MAX_VM_MEMORY_MIB
from .errors import Invalid
from .registry import STREAM_GRACE_SECONDS, ServiceContext, operation
from .types.vms import (
    ConsoleLogRequest,
    HostInfoRequest,
    InitRequest,
    MigrateAbortRequest,
    MigrateRequest,
    OpRequest,
    QueryRequest,
    VmListRequest,
    WaitJoinedRequest,
)


@operation(HostInfoRequest)
async def host_info(ctx: ServiceContext, req: HostInfoRequest) -> dict[str, Any]:
    """Every hypervisor: node facts, free memory and CPUs, VM count, up, maintenance."""
    return ctx.master.controller.host_info()


@operation(VmListRequest)
async def list_vms(ctx: ServiceContext, req: VmListRequest) -> dict[str, dict[str, str]]:
    """{hypervisor: {vm: state}} from the inventory."""
    return ctx.master.controller.list_vms()


@operation(QueryRequest)
async def query(ctx: ServiceContext, req: QueryRequest) -> dict[str, Any]:
    """Per hypervisor and VM: CPU, memory, state, graphics, disks, NICs (one VM if named)."""
    return ctx.master.controller.query(req.name)


def check_size(req: InitRequest) -> None:
    """Invalid unless the VM's CPUs and memory are within what libvirt can give one guest.

    Checked before placement: with 0 CPUs or 0 MiB every host "fits", and a dry run would
    promise a VM that cannot exist.
    """
    if not 1 <= req.cpus <= MAX_VM_CPUS:
        raise Invalid(f"a VM needs 1 to {MAX_VM_CPUS} CPUs, not {req.cpus}")
    if not 1 <= req.memory_mib <= MAX_VM_MEMORY_MIB:
        raise Invalid(f"a VM needs 1 to {MAX_VM_MEMORY_MIB} MiB of memory, not {req.memory_mib}")


@operation(InitRequest)
async def init(ctx: ServiceContext, req: InitRequest) -> dict[str, Any]:
    """Place (or use ``host``) and create a VM; ``dry_run`` explains the placement only."""
    check_size(req)
    return await ctx.master.controller.init(req)


@operation(OpRequest)
async def operate(ctx: ServiceContext, req: OpRequest) -> dict[str, Any]:
    """start|shutdown|stop|reboot|reset|pause|resume|purge|info|vnc on the VM's own hypervisor."""
    return await ctx.master.controller.operate(req.op, req.name, req.timeout)


@operation(MigrateRequest)
async def migrate(ctx: ServiceContext, req: MigrateRequest) -> dict[str, Any]:
    """Migrate a VM to another hypervisor over libvirt TLS; confirmed from both sides' events.

    The caller watches the migration's progress events while it runs.
    """
    ctx.watch(f"saltmarsh/virt/*/migration/{req.name}/progress", req.timeout + STREAM_GRACE_SECONDS)
    return await ctx.master.migrations.migrate(req)


@operation(MigrateAbortRequest)
async def migrate_abort(ctx: ServiceContext, req: MigrateAbortRequest) -> dict[str, Any]:
    """Abort a running migration; the VM keeps running where it was."""
    return await ctx.master.migrations.abort(req.name)


@operation(ConsoleLogRequest)
async def console_log(ctx: ServiceContext, req: ConsoleLogRequest) -> dict[str, Any]:
    """The tail of a VM's serial console log, from the hypervisor that holds it."""
    return await ctx.master.controller.console_log(req.name, req.lines)


@operation(WaitJoinedRequest)
async def wait_joined(ctx: ServiceContext, req: WaitJoinedRequest) -> dict[str, Any]:
    """Wait until a seeded VM's own agent is up, or say it is not with the console's last lines."""
    return await ctx.master.controller.wait_joined(req.name, req.timeout)
