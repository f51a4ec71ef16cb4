"""Cloud-controller commands: virt.host_info, virt.list, virt.query, virt.init, virt.op, host.maintenance, host.role."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from saltmarsh.protocol.messages import Interval

from ..controller import InitRequest
from ..migration import MigrateRequest
from . import STREAM_GRACE_SECONDS, CommandContext, command, parse_args


class QueryArgs(msgspec.Struct, forbid_unknown_fields=True):
    """An optional VM name."""

    name: str | None = None


class InitArgs(msgspec.Struct, forbid_unknown_fields=True):
    """``virt init`` arguments."""

    name: str
    cpus: int
    memory_mib: int
    image: str | None = None
    host: str | None = None
    labels: dict[str, str] = {}
    nic_profile: str = "default"
    disk_profile: str = "default"
    enable_qcow: bool = False
    enable_vnc: bool = False
    seed: bool = False
    master_address: str | None = None
    dry_run: bool = False
    timeout: Interval = 600.0


class OpArgs(msgspec.Struct, forbid_unknown_fields=True):
    """An operation on one VM by name."""

    op: str
    name: str
    timeout: Interval = 120.0


class ConsoleLogArgs(msgspec.Struct, forbid_unknown_fields=True):
    """``virt console-log`` arguments."""

    name: str
    lines: int = 50


class WaitJoinedArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Wait for the agent inside a seeded VM to join."""

    name: str
    timeout: Interval = 300.0


class MaintenanceArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Maintenance on or off for one hypervisor."""

    host: str
    state: Literal["on", "off"]


class RoleArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Whether an accepted agent is a hypervisor or a guest (one that joined by token)."""

    id: str
    role: Literal["hypervisor", "guest"]


@command("virt.host_info")
async def host_info(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Every hypervisor: node facts, free memory and CPUs, VM count, up, maintenance."""
    return ctx.master.controller.host_info()


@command("virt.list")
async def list_vms(ctx: CommandContext, args: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{hypervisor: {vm: state}} from the inventory."""
    return ctx.master.controller.list_vms()


@command("virt.query")
async def query(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Per hypervisor and VM: CPU, memory, state, graphics, disks, NICs (one VM if named)."""
    return ctx.master.controller.query(parse_args(args, QueryArgs).name)


@command("virt.init")
async def init(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Place (or use --host) and create a VM; dry_run explains the placement only."""
    a = parse_args(args, InitArgs)
    options = {"nic_profile": a.nic_profile, "disk_profile": a.disk_profile, "enable_qcow": a.enable_qcow,
               "enable_vnc": a.enable_vnc, "seed": a.seed}
    return await ctx.master.controller.init(
        InitRequest(a.name, a.cpus, a.memory_mib, a.image, a.host, a.labels, options, a.dry_run, a.timeout,
                    a.master_address)
    )


@command("virt.op")
async def operate(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """start|shutdown|stop|reboot|reset|pause|resume|purge|info|vnc on the VM's own hypervisor."""
    a = parse_args(args, OpArgs)
    return await ctx.master.controller.operate(a.op, a.name, a.timeout)


MAX_DOWNTIME_MS = 3_600_000  # an hour of downtime is an offline migration
MAX_BANDWIDTH_MIB = 1 << 20  # 1 TiB/s: no link is faster; 0 leaves it to libvirt


class MigrateArgs(msgspec.Struct, forbid_unknown_fields=True):
    """``virt migrate`` arguments."""

    name: str
    target: str
    offline: bool = False
    copy_storage: Literal["", "all", "inc"] = ""
    max_downtime_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_DOWNTIME_MS)] = 0
    bandwidth_mib: Annotated[int, msgspec.Meta(ge=0, le=MAX_BANDWIDTH_MIB)] = 0
    postcopy: bool = False
    dry_run: bool = False
    timeout: Interval = 600.0


@command("virt.migrate")
async def migrate(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Migrate a VM to another hypervisor over libvirt TLS; confirmed from both sides' events."""
    a = parse_args(args, MigrateArgs)
    ctx.subscribe(f"saltmarsh/virt/*/migration/{a.name}/progress", a.timeout + STREAM_GRACE_SECONDS)
    return await ctx.master.migrations.migrate(MigrateRequest(
        a.name, a.target, a.offline, a.copy_storage, a.max_downtime_ms, a.bandwidth_mib, a.postcopy, a.dry_run,
        a.timeout))


@command("virt.migrate_abort")
async def migrate_abort(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Abort a running migration; the VM keeps running where it was."""
    return await ctx.master.migrations.abort(parse_args(args, QueryArgs).name or "")


@command("host.maintenance")
async def maintenance(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Put a hypervisor in or out of maintenance (placement skips it)."""
    a = parse_args(args, MaintenanceArgs)
    return ctx.master.controller.maintenance(a.host, a.state == "on")


@command("host.role")
async def role(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Make an accepted agent a hypervisor (listed, placed on) or a guest (neither)."""
    a = parse_args(args, RoleArgs)
    return await ctx.master.controller.set_role(a.id, a.role)


@command("virt.console_log")
async def console_log(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """The tail of a VM's serial console log, from the hypervisor that holds it."""
    a = parse_args(args, ConsoleLogArgs)
    return await ctx.master.controller.console_log(a.name, a.lines)


@command("virt.wait_joined")
async def wait_joined(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Wait until a seeded VM's own agent is up, or say it is not with the console's last lines."""
    a = parse_args(args, WaitJoinedArgs)
    return await ctx.master.controller.wait_joined(a.name, a.timeout)
