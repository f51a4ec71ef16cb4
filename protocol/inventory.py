"""What both ends agree on about a hypervisor's inventory: its digest.

The master keeps each hypervisor's inventory (node facts and every VM's info) from a full
snapshot and libvirt's events since (master/cloud/inventory.py); the agent can make the same
snapshot at any time (agent/virt/inventory.py). When an agent comes up, the master sends
the digest of what it holds instead of asking for the whole snapshot
(messages.InventoryCheck), and the agent sends its snapshot only when its own digest
differs: after a master restart, a thousand agents cost a thousand small pushes, not a
thousand inventories taken, sent, stored and compared.

The digest covers what the master keeps and compares: whether libvirt answered, the node
facts and the VMs' info, in a canonical encoding (msgpack with sorted keys). Free memory
and CPUs are left out (both ends compute them from the rest), and so is the error text of
a host whose libvirt is unavailable (a new wording is no new state). A digest that differs
for a reason that does not matter (a field the master recorded differently) costs only a
snapshot pushed once more, never a stale inventory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .digest import digest

_canonical = msgspec.msgpack.Encoder(order="sorted")


def canonical_snapshot(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a snapshot (``virt.full_info`` plus ``available``) that the digest covers."""
    if not snapshot.get("available", "node_info" in snapshot):
        return {"available": False}
    return {"available": True, "node_info": snapshot.get("node_info", {}), "vm_info": snapshot.get("vm_info", {})}


def inventory_digest(snapshot: Mapping[str, Any]) -> bytes:
    """The 32-byte digest of a hypervisor's inventory snapshot."""
    return digest(_canonical.encode(canonical_snapshot(snapshot)))


__all__ = ["canonical_snapshot", "inventory_digest"]
