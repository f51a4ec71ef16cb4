"""``host.*``: facts of the hypervisor this agent runs on."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any

from ..errors import LibvirtFailure
from ..virt.host import LibvirtHost
from . import FunctionContext, function


def _memory_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def _uptime_seconds() -> float:
    """Seconds since this kernel booted: a host (or guest) that restarted shows it, a migrated guest does not."""
    return float(Path("/proc/uptime").read_text().split()[0])


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def _libvirt_node(host: LibvirtHost) -> dict[str, Any]:
    uri = host.uri
    try:
        with host.call("node info") as conn:
            model, memory_mib, cpus, mhz, nodes, sockets, cores, threads = conn.getInfo()
            return {
                "uri": uri, "available": True, "hostname": conn.getHostname(), "driver": conn.getType(),
                "version": conn.getLibVersion(), "cpu_model": model, "memory_mib": memory_mib,
                "cpus": cpus, "mhz": mhz, "numa_nodes": nodes, "sockets": sockets,
                "cores_per_socket": cores, "threads_per_core": threads,
            }
    except LibvirtFailure as exc:
        return {"uri": uri, "available": False, "error": str(exc)}


@function("host.info", quick=True)
def info(ctx: FunctionContext) -> dict[str, Any]:
    """Hostname, CPUs, memory, OS, kernel, uptime, labels, agent version, and libvirt's node info."""
    return {
        "id": ctx.agent_id,
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count() or 0,
        "memory_mib": _memory_mib(),
        "os": _os_release(),
        "kernel": platform.release(),
        "uptime_seconds": _uptime_seconds(),
        "labels": ctx.labels,
        "agent_version": ctx.version,
        "libvirt": _libvirt_node(ctx.libvirt),
    }
