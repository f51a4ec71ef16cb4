"""``virt.*`` inventory: what VMs this hypervisor has and what they look like."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any

from ..functions import FunctionContext, function
from ..libvirt_conn import libvirt
from .host import LibvirtHost
from .spec import validate_name

STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff",
          6: "crashed", 7: "pmsuspended"}
ACTIVE_STATES = {"running", "blocked", "paused", "pmsuspended"}
MIB = 1024 * 1024


def state_name(code: int) -> str:
    """libvirt's state number as a word."""
    return STATES.get(code, "unknown")


def _disks(dom: Any, root: ET.Element) -> dict[str, dict[str, Any]]:
    disks = {}
    for disk in root.iterfind("./devices/disk"):
        target = disk.find("target")
        if target is None:
            continue
        dev = target.get("dev", "")
        source = disk.find("source")
        path = "" if source is None else source.get("file") or source.get("dev") or source.get("volume") or ""
        driver = disk.find("driver")
        disks[dev] = {"file": path, "format": "" if driver is None else driver.get("type", ""),
                      "device": disk.get("device", "disk"), "bus": target.get("bus", ""),
                      **_disk_size(dom, dev, path)}
    return disks


def _disk_size(dom: Any, dev: str, path: str) -> dict[str, int]:
    try:
        capacity, allocation, _physical = dom.blockInfo(dev)
        return {"virtual_size": int(capacity), "disk_size": int(allocation)}
    except Exception:  # noqa: BLE001 -- the test driver and unstarted CD-ROMs have no block info; fall back to the file
        size = os.stat(path).st_size if path and os.path.exists(path) else 0
        return {"virtual_size": size, "disk_size": size}


def _nics(root: ET.Element) -> dict[str, dict[str, str]]:
    nics = {}
    for nic in root.iterfind("./devices/interface"):
        mac = nic.find("mac")
        source = nic.find("source")
        model = nic.find("model")
        address = "" if mac is None else mac.get("address", "")
        nics[address] = {
            "mac": address, "type": nic.get("type", ""),
            "source": "" if source is None else (source.get("bridge") or source.get("network") or ""),
            "model": "" if model is None else model.get("type", ""),
        }
    return nics


def _graphics(root: ET.Element) -> dict[str, Any]:
    element = root.find("./devices/graphics")
    if element is None:
        return {"type": "none"}
    return {"type": element.get("type", ""), "port": int(element.get("port", "-1")),
            "listen": element.get("listen", "")}


def domain_info(dom: Any) -> dict[str, Any]:
    """Everything ``virt query`` shows of one VM."""
    state, max_kib, cur_kib, vcpus, _cputime = dom.info()
    root = ET.fromstring(dom.XMLDesc(0))
    return {
        "name": dom.name(), "uuid": dom.UUIDString(), "state": state_name(state), "cpu": vcpus,
        "memory_mib": max_kib // 1024, "current_memory_mib": cur_kib // 1024,
        "autostart": bool(dom.autostart()), "persistent": bool(dom.isPersistent()),
        "graphics": _graphics(root), "disks": _disks(dom, root), "nics": _nics(root),
    }


def _all(host: LibvirtHost) -> list[Any]:
    with host.call("list domains") as conn:
        return sorted(conn.listAllDomains(0), key=lambda d: d.name())


def _selected(host: LibvirtHost, name: str | None) -> list[Any]:
    if name is None:
        return _all(host)
    with host.call("look up", name) as conn:
        return [host.domain(conn, validate_name(name))]


def node_facts(host: LibvirtHost) -> dict[str, Any]:
    """The hypervisor's CPUs and memory as libvirt reports them."""
    with host.call("node info") as conn:
        model, memory_mib, cpus, mhz, nodes, sockets, cores, threads = conn.getInfo()
        return {"hostname": conn.getHostname(), "driver": conn.getType(), "cpu_model": model,
                "memory_mib": memory_mib, "cpus": cpus, "mhz": mhz, "numa_nodes": nodes,
                "sockets": sockets, "cores_per_socket": cores, "threads_per_core": threads}


def free_resources(host: LibvirtHost, infos: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """Memory (MiB) and CPUs not given to running VMs (as Salt counts them: current memory, vCPUs)."""
    node = node_facts(host)
    if infos is None:
        infos = [domain_info(d) for d in _all(host)]
    active = [i for i in infos if i["state"] in ACTIVE_STATES]
    return {"freemem": node["memory_mib"] - sum(i["current_memory_mib"] for i in active),
            "freecpu": node["cpus"] - sum(i["cpu"] for i in active)}


@function("virt.list_domains")
def list_domains(ctx: FunctionContext) -> list[str]:
    """Names of every VM defined or running here."""
    return [d.name() for d in _all(ctx.libvirt)]


@function("virt.list_active")
def list_active(ctx: FunctionContext) -> list[str]:
    """Names of running (or paused) VMs."""
    return [d.name() for d in _all(ctx.libvirt) if d.isActive()]


@function("virt.list_inactive")
def list_inactive(ctx: FunctionContext) -> list[str]:
    """Names of defined VMs that are not running."""
    return [d.name() for d in _all(ctx.libvirt) if not d.isActive()]


@function("virt.vm_state")
def vm_state(ctx: FunctionContext, name: str | None = None) -> dict[str, str]:
    """{name: state} of one VM or of all."""
    return {d.name(): state_name(d.state()[0]) for d in _selected(ctx.libvirt, name)}


@function("virt.vm_info")
def vm_info(ctx: FunctionContext, name: str | None = None) -> dict[str, dict[str, Any]]:
    """{name: info} of one VM or of all: state, CPU, memory, graphics, disks, NICs."""
    return {d.name(): domain_info(d) for d in _selected(ctx.libvirt, name)}


@function("virt.node_info")
def node_info(ctx: FunctionContext) -> dict[str, Any]:
    """The hypervisor's CPUs and memory as libvirt reports them."""
    return node_facts(ctx.libvirt)


@function("virt.freemem")
def freemem(ctx: FunctionContext) -> int:
    """MiB of memory not committed to running VMs."""
    return free_resources(ctx.libvirt)["freemem"]


@function("virt.freecpu")
def freecpu(ctx: FunctionContext) -> int:
    """CPUs not committed to running VMs."""
    return free_resources(ctx.libvirt)["freecpu"]


def full_inventory(host: LibvirtHost) -> dict[str, Any]:
    """Node facts, free resources and every VM's info in one snapshot."""
    infos = {d.name(): domain_info(d) for d in _all(host)}
    return {"node_info": node_facts(host), **free_resources(host, list(infos.values())), "vm_info": infos}


@function("virt.full_info")
def full_info(ctx: FunctionContext) -> dict[str, Any]:
    """node_info, freemem, freecpu and vm_info at once (what the master's inventory keeps)."""
    return full_inventory(ctx.libvirt)


@function("virt.get_disks")
def get_disks(ctx: FunctionContext, name: str) -> dict[str, dict[str, Any]]:
    """A VM's disks by target device: file, format, sizes."""
    return vm_info(ctx, name)[name]["disks"]  # type: ignore[no-any-return]


@function("virt.get_nics")
def get_nics(ctx: FunctionContext, name: str) -> dict[str, dict[str, str]]:
    """A VM's NICs by MAC: type, source, model."""
    return vm_info(ctx, name)[name]["nics"]  # type: ignore[no-any-return]


@function("virt.get_macs")
def get_macs(ctx: FunctionContext, name: str) -> list[str]:
    """A VM's MAC addresses."""
    return sorted(get_nics(ctx, name))


@function("virt.get_graphics")
def get_graphics(ctx: FunctionContext, name: str, secure: bool = False) -> dict[str, Any]:
    """A VM's console: type, port, listen address (and its password with secure=True)."""
    with ctx.libvirt.call("get graphics of", name) as conn:
        dom = ctx.libvirt.domain(conn, validate_name(name))
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE if secure else 0))
    graphics = _graphics(root)
    element = root.find("./devices/graphics")
    if secure and element is not None and element.get("passwd"):
        graphics["password"] = element.get("passwd")
    return graphics


@function("virt.get_xml")
def get_xml(ctx: FunctionContext, name: str) -> str:
    """A VM's live domain XML."""
    with ctx.libvirt.call("get XML of", name) as conn:
        return str(ctx.libvirt.domain(conn, validate_name(name)).XMLDesc(0))


@function("virt.capabilities")
def capabilities(ctx: FunctionContext) -> dict[str, Any]:
    """The hypervisor's capabilities: host CPU arch and the guest types it can run."""
    with ctx.libvirt.call("capabilities") as conn:
        root = ET.fromstring(conn.getCapabilities())
    guests = []
    for guest in root.iterfind("guest"):
        arch = guest.find("arch")
        guests.append({
            "os_type": guest.findtext("os_type", ""),
            "arch": "" if arch is None else arch.get("name", ""),
            "domain_types": [] if arch is None else [d.get("type", "") for d in arch.iterfind("domain")],
        })
    return {"host_arch": root.findtext("./host/cpu/arch", ""), "guests": guests}
