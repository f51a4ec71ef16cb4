"""``virt.*`` snapshots: take, list, revert to, delete."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Any

from ..functions import FunctionContext, function
from .inventory import state_name
from .spec import validate_name


def _snapshot_xml(name: str, description: str) -> str:
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    return ET.tostring(root, encoding="unicode")


@function("virt.snapshot")
def snapshot(ctx: FunctionContext, name: str, snapshot_name: str = "", description: str = "") -> dict[str, str]:
    """Take a snapshot of a VM (named after the time unless snapshot_name is given)."""
    snap = validate_name(snapshot_name or time.strftime("snap-%Y%m%d-%H%M%S"))
    with ctx.libvirt.call("snapshot", name) as conn:
        dom = ctx.libvirt.domain(conn, validate_name(name))
        created = dom.snapshotCreateXML(_snapshot_xml(snap, description), 0)
        return {"name": name, "snapshot": created.getName()}


@function("virt.list_snapshots")
def list_snapshots(ctx: FunctionContext, name: str) -> list[dict[str, Any]]:
    """A VM's snapshots, oldest first: name, creation time, VM state, whether current."""
    with ctx.libvirt.call("list snapshots of", name) as conn:
        dom = ctx.libvirt.domain(conn, validate_name(name))
        snaps = []
        for snap in dom.listAllSnapshots(0):
            root = ET.fromstring(snap.getXMLDesc(0))
            snaps.append({"snapshot": snap.getName(), "created": int(root.findtext("creationTime", "0")),
                          "state": root.findtext("state", ""), "current": bool(snap.isCurrent(0))})
        return sorted(snaps, key=lambda s: (s["created"], s["snapshot"]))


@function("virt.revert_snapshot")
def revert_snapshot(ctx: FunctionContext, name: str, snapshot_name: str) -> dict[str, str]:
    """Revert a VM to one of its snapshots."""
    with ctx.libvirt.call("revert", name) as conn:
        dom = ctx.libvirt.domain(conn, validate_name(name))
        dom.revertToSnapshot(dom.snapshotLookupByName(validate_name(snapshot_name), 0), 0)
        return {"name": name, "snapshot": snapshot_name, "state": state_name(dom.state()[0])}


@function("virt.delete_snapshot")
def delete_snapshot(ctx: FunctionContext, name: str, snapshot_name: str) -> dict[str, str]:
    """Delete one snapshot of a VM."""
    with ctx.libvirt.call("delete snapshot of", name) as conn:
        dom = ctx.libvirt.domain(conn, validate_name(name))
        dom.snapshotLookupByName(validate_name(snapshot_name), 0).delete(0)
        return {"name": name, "deleted": snapshot_name}
