"""What the kernel says of a network interface now: its kind, its bridge, its MAC, its addresses, its gateway.

Read with iproute2's JSON output (``ip -j``), so nothing parses text meant for people. Only
global-scope addresses count: link-local ones come and go with the link and are no one's config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import StateError
from .system import System


@dataclass(frozen=True)
class Link:
    """One interface as the kernel has it."""

    name: str
    kind: str  # "bridge", "veth", "" for a plain device
    master: str  # the bridge it is a port of, "" if none
    mac: str
    addresses: tuple[str, ...]  # global scope, as address/prefix, in the kernel's order
    gateway: str  # the default route's gateway through it, "" if none


def read_link(system: System, name: str) -> Link | None:
    """The interface ``name``, or None if the host has none of that name."""
    shown = system.run(["ip", "-j", "-d", "link", "show", "dev", name], check=False)
    if shown.returncode != 0:
        if "does not exist" in shown.stderr or "Cannot find device" in shown.stderr:
            return None
        raise StateError(f"ip link show {name} exited {shown.returncode}: {shown.stderr.strip()}")
    link = _json(shown.stdout, name)[0]
    info = link.get("linkinfo") or {}
    return Link(name=name, kind=str(info.get("info_kind", "")), master=str(link.get("master", "")),
                mac=str(link.get("address", "")), addresses=addresses(system, name), gateway=gateway(system, name))


def addresses(system: System, name: str) -> tuple[str, ...]:
    """The global-scope addresses of ``name``."""
    found = _json(system.run(["ip", "-j", "addr", "show", "dev", name]).stdout, name)
    return tuple(f"{a['local']}/{a['prefixlen']}" for entry in found for a in entry.get("addr_info", [])
                 if a.get("scope") == "global" and "local" in a)


def gateway(system: System, name: str) -> str:
    """The gateway of the default route through ``name`` (IPv4 first), or ""."""
    for family in ("-4", "-6"):
        routes = _json(system.run(["ip", "-j", family, "route", "show", "default", "dev", name]).stdout, name)
        for route in routes:
            if route.get("gateway"):
                return str(route["gateway"])
    return ""


def route_to(system: System, address: str) -> tuple[str, str]:
    """The interface and source address this host reaches ``address`` through; ("", "") if it has no route."""
    found = system.run(["ip", "-j", "route", "get", address], check=False)
    if found.returncode != 0:
        return "", ""
    routes = _json(found.stdout, address)
    return (str(routes[0].get("dev", "")), str(routes[0].get("prefsrc", ""))) if routes else ("", "")


def _json(text: str, what: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text or "[]")
    except ValueError as exc:
        raise StateError(f"ip printed no JSON for {what}: {exc}") from exc
    if not isinstance(data, list):
        raise StateError(f"ip printed no list for {what}")
    return [entry for entry in data if isinstance(entry, dict)]
