"""``virt.network_*`` and ``virt.pool_*``: enough for a bridge or NAT network and a directory pool."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from ..errors import InvalidSpec
from ..functions import FunctionContext, function
from .spec import validate_name


def _network_xml(name: str, mode: str, bridge: str, cidr: str) -> str:
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    if mode == "bridge":
        if not bridge:
            raise InvalidSpec("a bridge network needs bridge=<existing bridge>")
        ET.SubElement(root, "forward", mode="bridge")
        ET.SubElement(root, "bridge", name=bridge)
        return ET.tostring(root, encoding="unicode")
    if mode != "nat":
        raise InvalidSpec(f"network mode {mode!r} is not nat or bridge")
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise InvalidSpec(f"cidr {cidr!r}: {exc}") from exc
    hosts = list(net.hosts())
    if len(hosts) < 3:
        raise InvalidSpec(f"network {cidr} is too small for a gateway and a DHCP range")
    ET.SubElement(root, "forward", mode="nat")
    if bridge:
        ET.SubElement(root, "bridge", name=bridge)
    ip = ET.SubElement(root, "ip", address=str(hosts[0]), netmask=str(net.netmask))
    dhcp = ET.SubElement(ip, "dhcp")
    ET.SubElement(dhcp, "range", start=str(hosts[1]), end=str(hosts[-1]))
    return ET.tostring(root, encoding="unicode")


@function("virt.network_list")
def network_list(ctx: FunctionContext) -> dict[str, dict[str, Any]]:
    """Networks by name: active, autostart, bridge."""
    with ctx.libvirt.call("list networks") as conn:
        return {n.name(): {"active": bool(n.isActive()), "autostart": bool(n.autostart()),
                           "bridge": _bridge(n)} for n in conn.listAllNetworks(0)}


def _bridge(net: Any) -> str:
    try:
        return str(net.bridgeName())
    except Exception:  # noqa: BLE001 -- some drivers have no bridge name for a network
        return ""


@function("virt.network_define")
def network_define(ctx: FunctionContext, name: str, mode: str = "nat", bridge: str = "",
                   cidr: str = "192.168.150.0/24", start: bool = True, autostart: bool = True) -> dict[str, Any]:
    """Define a NAT network (gateway and DHCP in ``cidr``) or one on an existing bridge (mode=bridge)."""
    xml = _network_xml(validate_name(name), mode, bridge, cidr)
    with ctx.libvirt.call("define network", name) as conn:
        net = conn.networkDefineXML(xml)
        if autostart:
            net.setAutostart(1)
        if start:
            net.create()
    return network_list(ctx)[name]  # type: ignore[no-any-return]


def _network(ctx: FunctionContext, what: str, name: str, action: Callable[[Any], Any]) -> dict[str, str]:
    with ctx.libvirt.call(what, name) as conn:
        action(conn.networkLookupByName(validate_name(name)))
    return {"network": name, "done": what}


@function("virt.network_start")
def network_start(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Start a defined network."""
    return _network(ctx, "start network", name, lambda n: n.create())


@function("virt.network_stop")
def network_stop(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Stop a running network."""
    return _network(ctx, "stop network", name, lambda n: n.destroy())


@function("virt.network_undefine")
def network_undefine(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Remove a network's definition."""
    return _network(ctx, "undefine network", name, lambda n: n.undefine())


@function("virt.pool_list")
def pool_list(ctx: FunctionContext) -> dict[str, dict[str, Any]]:
    """Storage pools by name: active, autostart, capacity and free bytes."""
    with ctx.libvirt.call("list pools") as conn:
        pools = {}
        for pool in conn.listAllStoragePools(0):
            _state, capacity, _allocation, available = pool.info()
            pools[pool.name()] = {"active": bool(pool.isActive()), "autostart": bool(pool.autostart()),
                                  "capacity": capacity, "available": available}
        return pools


@function("virt.pool_define")
def pool_define(ctx: FunctionContext, name: str, path: str, start: bool = True,
                autostart: bool = True) -> dict[str, Any]:
    """Define a directory pool at ``path`` (an absolute path on the hypervisor)."""
    if not path.startswith("/"):
        raise InvalidSpec(f"pool path {path!r} must be absolute")
    root = ET.Element("pool", type="dir")
    ET.SubElement(root, "name").text = validate_name(name)
    ET.SubElement(ET.SubElement(root, "target"), "path").text = path
    with ctx.libvirt.call("define pool", name) as conn:
        pool = conn.storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
        pool.build(0)
        if autostart:
            pool.setAutostart(1)
        if start:
            pool.create(0)
    return pool_list(ctx)[name]  # type: ignore[no-any-return]


def _pool(ctx: FunctionContext, what: str, name: str, action: Callable[[Any], Any]) -> dict[str, str]:
    with ctx.libvirt.call(what, name) as conn:
        action(conn.storagePoolLookupByName(validate_name(name)))
    return {"pool": name, "done": what}


@function("virt.pool_start")
def pool_start(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Start a defined pool."""
    return _pool(ctx, "start pool", name, lambda p: p.create(0))


@function("virt.pool_stop")
def pool_stop(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Stop a running pool."""
    return _pool(ctx, "stop pool", name, lambda p: p.destroy())


@function("virt.pool_undefine")
def pool_undefine(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Remove a pool's definition (its files stay)."""
    return _pool(ctx, "undefine pool", name, lambda p: p.undefine())
