"""``virt.*`` lifecycle: start, stop, pause, ... of one VM by name; each returns the VM's new state."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import FunctionError
from ..functions import FunctionContext, function
from ..libvirt_conn import libvirt
from .inventory import domain_info, state_name
from .spec import validate_name


def _act(ctx: FunctionContext, what: str, name: str, action: Callable[[Any], Any]) -> dict[str, str]:
    with ctx.libvirt.call(what, name) as conn:
        dom = ctx.libvirt.domain(conn, validate_name(name))
        action(dom)
        return {"name": name, "state": state_name(dom.state()[0])}


@function("virt.start")
def start(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Start a defined VM."""
    return _act(ctx, "start", name, lambda d: d.create())


@function("virt.shutdown")
def shutdown(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Ask the guest to power off (ACPI); see virt.stop to force it."""
    return _act(ctx, "shut down", name, lambda d: d.shutdown())


@function("virt.stop")
def stop(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Force a VM off at once (libvirt's destroy; the definition and disks stay)."""
    return _act(ctx, "stop", name, lambda d: d.destroy())


@function("virt.reboot")
def reboot(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Ask the guest to reboot."""
    return _act(ctx, "reboot", name, lambda d: d.reboot(0))


@function("virt.reset")
def reset(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Reset a VM as a hardware reset button would."""
    return _act(ctx, "reset", name, lambda d: d.reset(0))


@function("virt.pause")
def pause(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Pause (suspend) a running VM."""
    return _act(ctx, "pause", name, lambda d: d.suspend())


@function("virt.resume")
def resume(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Resume a paused VM."""
    return _act(ctx, "resume", name, lambda d: d.resume())


def _undefine(dom: Any) -> None:
    flags = libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    try:
        dom.undefineFlags(flags)
    except libvirt.libvirtError:
        dom.undefine()  # drivers without the flags (the test driver) still undefine


@function("virt.undefine")
def undefine(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Remove a stopped VM's definition (its disks stay; see virt.purge)."""
    with ctx.libvirt.call("undefine", name) as conn:
        dom = ctx.libvirt.domain(conn, validate_name(name))
        if dom.isActive():
            raise FunctionError(f"VM {name} is running; stop it first or use virt.purge")
        _undefine(dom)
    return {"name": name, "state": "undefined"}


@function("virt.purge")
def purge(ctx: FunctionContext, name: str) -> dict[str, Any]:
    """Stop a VM, undefine it, and delete its disk files that live under this agent's vm_dir.

    Disks elsewhere (an operator's own files) are reported as kept, never deleted.
    """
    vm_dir = ctx.virt.vm_dir.resolve()
    with ctx.libvirt.call("purge", name) as conn:
        dom = ctx.libvirt.domain(conn, validate_name(name))
        disks = [d["file"] for d in domain_info(dom)["disks"].values() if d["device"] == "disk" and d["file"]]
        if dom.isActive():
            dom.destroy()
        _undefine(dom)
    removed, kept = [], []
    for file in disks:
        path = Path(file).resolve()
        if path.is_relative_to(vm_dir) and path.exists():
            path.unlink()
            removed.append(file)
        else:
            kept.append(file)
    own_dir = vm_dir / name
    if own_dir.is_dir():
        shutil.rmtree(own_dir)
    return {"name": name, "state": "purged", "removed": removed, "kept": kept}


@function("virt.set_autostart")
def set_autostart(ctx: FunctionContext, name: str, enabled: bool = True) -> dict[str, Any]:
    """Start the VM when the hypervisor boots (or not)."""
    with ctx.libvirt.call("set autostart of", name) as conn:
        dom = ctx.libvirt.domain(conn, validate_name(name))
        dom.setAutostart(1 if enabled else 0)
        return {"name": name, "autostart": bool(dom.autostart())}


def _live_and_config(dom: Any) -> int:
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0
    return flags | (libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0)


@function("virt.setmem")
def setmem(ctx: FunctionContext, name: str, memory_mib: int) -> dict[str, Any]:
    """Set a VM's memory (MiB), live if it runs and in its definition; at most its maximum when running."""
    if int(memory_mib) < 16:
        raise FunctionError("memory_mib must be at least 16")
    with ctx.libvirt.call("set memory of", name) as conn:
        dom = ctx.libvirt.domain(conn, validate_name(name))
        kib = int(memory_mib) * 1024
        if not dom.isActive():
            dom.setMemoryFlags(kib, libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
        dom.setMemoryFlags(kib, _live_and_config(dom))
        return {"name": name, "memory_mib": dom.info()[2] // 1024}


@function("virt.setvcpus")
def setvcpus(ctx: FunctionContext, name: str, cpus: int) -> dict[str, Any]:
    """Set a VM's vCPU count, live if it runs and in its definition."""
    if int(cpus) < 1:
        raise FunctionError("cpus must be at least 1")
    with ctx.libvirt.call("set vCPUs of", name) as conn:
        dom = ctx.libvirt.domain(conn, validate_name(name))
        if not dom.isActive():
            dom.setVcpusFlags(int(cpus), libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        dom.setVcpusFlags(int(cpus), _live_and_config(dom))
        return {"name": name, "cpu": dom.info()[3]}
