"""The master's view of every hypervisor and its VMs, kept from what agents push.

Fed by events, never by polling every hypervisor at every call (as Salt's
runner does): a full snapshot when an agent comes up and its own differs from
what the master holds (master/agents/resync.py compares digests first,
protocol/inventory.py) or when it reconnects to libvirt (the agent pushes it),
then libvirt's own lifecycle events, each carrying the VM's current info.
What a guest agent (one that joined by token, master/agents/join_tokens.py) pushes is
ignored: it is not a hypervisor until the operator makes it one. Persisted
in the job cache's database, so a restarted master knows where every VM is.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.inventory import inventory_digest

from ..events.bus import Event
from ..store.jobcache import JobCache

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hypervisors (
    agent_id TEXT PRIMARY KEY, node BLOB NOT NULL, available INTEGER NOT NULL, error TEXT NOT NULL,
    maintenance INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS vms (
    agent_id TEXT NOT NULL, name TEXT NOT NULL, info BLOB NOT NULL, PRIMARY KEY (agent_id, name));
"""
ACTIVE_STATES = {"running", "blocked", "paused", "pmsuspended"}


@dataclass
class Hypervisor:
    """One hypervisor as the master knows it."""

    agent_id: str
    node: dict[str, Any] = field(default_factory=dict)
    available: bool = False
    error: str = ""
    maintenance: bool = False
    updated: float = 0.0
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def freemem(self) -> int:
        """MiB not given to running VMs (their current memory, as Salt counts it)."""
        return int(self.node.get("memory_mib", 0)) - sum(int(v.get("current_memory_mib", 0)) for v in self._active())

    @property
    def freecpu(self) -> int:
        """CPUs not committed to running VMs."""
        return int(self.node.get("cpus", 0)) - sum(int(v["cpu"]) for v in self._active())

    def _active(self) -> list[dict[str, Any]]:
        return [v for v in self.vms.values() if v.get("state") in ACTIVE_STATES]


def _public(graphics: dict[str, Any]) -> dict[str, Any]:
    """Graphics without the console password (the inventory is not a secret store)."""
    return {k: v for k, v in graphics.items() if k != "password"}


class Inventory:
    """Hypervisors and VMs by agent, updated from events and stored in SQLite."""

    def __init__(self, cache: JobCache, is_guest: Callable[[str], bool]) -> None:
        """``is_guest`` names the agents that are not hypervisors (they joined by token): never listed."""
        self._cache = cache
        self._is_guest = is_guest
        db = cache.db
        db.executescript(SCHEMA)
        self._hosts: dict[str, Hypervisor] = {}
        self._digests: dict[str, bytes] = {}  # of each host as held now; dropped at every change
        self.snapshots = 0  # full snapshots applied since start
        for agent_id, node, available, error, maintenance, updated in db.execute("SELECT * FROM hypervisors"):
            self._hosts[agent_id] = Hypervisor(agent_id, decode(node, dict[str, Any]), bool(available), error,
                                               bool(maintenance), updated)
        for agent_id, name, info in db.execute("SELECT * FROM vms"):
            if agent_id in self._hosts:
                self._hosts[agent_id].vms[name] = decode(info, dict[str, Any])

    def hosts(self) -> list[Hypervisor]:
        """Every hypervisor ever seen, sorted by id."""
        return [self._hosts[k] for k in sorted(self._hosts)]

    def get(self, agent_id: str) -> Hypervisor | None:
        """One hypervisor, or None."""
        return self._hosts.get(agent_id)

    def digest(self, agent_id: str) -> bytes:
        """The digest of what is held of ``agent_id`` (protocol/inventory.py); b"" if nothing is."""
        cached = self._digests.get(agent_id)
        if cached is not None:
            return cached
        host = self._hosts.get(agent_id)
        if host is None:
            return b""
        value = self._digests[agent_id] = inventory_digest(
            {"available": host.available, "node_info": host.node, "vm_info": host.vms})
        return value

    def locate(self, vm: str) -> list[str]:
        """The hypervisors that hold a VM of this name (normally one)."""
        return [h.agent_id for h in self.hosts() if vm in h.vms]

    def on_event(self, event: Event) -> None:
        """Apply a ``saltmarsh/virt/<agent>/...`` event."""
        parts = event.tag.split("/")
        if len(parts) < 3 or self._is_guest(parts[2]):
            return
        if len(parts) == 4 and parts[3] == "inventory" and isinstance(event.data, dict):
            self.apply_snapshot(parts[2], event.data)
        elif len(parts) == 6 and parts[3] == "domain" and isinstance(event.data, dict):
            self._apply_domain(parts[2], parts[4], parts[5], event.data)

    def apply_snapshot(self, agent_id: str, snapshot: dict[str, Any]) -> None:
        """Replace everything known of a hypervisor with a full snapshot (virt.full_info)."""
        if self._is_guest(agent_id):
            log.info("inventory: %s is a guest (joined by token), not a hypervisor: its snapshot is ignored",
                     agent_id)
            return
        host = self._hosts.setdefault(agent_id, Hypervisor(agent_id))
        self._digests.pop(agent_id, None)
        self.snapshots += 1
        host.available = bool(snapshot.get("available", "node_info" in snapshot))
        host.error = str(snapshot.get("error", ""))
        if host.available:
            host.node = dict(snapshot.get("node_info", {}))
            host.vms = {name: dict(info) for name, info in snapshot.get("vm_info", {}).items()}
        host.updated = time.time()
        with self._cache.transaction() as db:
            db.execute("DELETE FROM vms WHERE agent_id = ?", (agent_id,))
            db.executemany("INSERT INTO vms VALUES (?, ?, ?)",
                           [(agent_id, name, encode(info)) for name, info in host.vms.items()])
            self._save_host(db, host)
        log.info("inventory of %s: %d VMs%s", agent_id, len(host.vms), "" if host.available else f" ({host.error})")

    def _apply_domain(self, agent_id: str, vm: str, what: str, data: dict[str, Any]) -> None:
        host = self._hosts.setdefault(agent_id, Hypervisor(agent_id))
        self._digests.pop(agent_id, None)
        info = data.get("info")
        with self._cache.transaction() as db:
            migrated_away = what == "stopped" and data.get("detail") == "migrated"
            if what == "undefined" or migrated_away or (info is None and what == "stopped" and vm in host.vms
                                                        and not host.vms[vm].get("persistent", True)):
                host.vms.pop(vm, None)
                db.execute("DELETE FROM vms WHERE agent_id = ? AND name = ?", (agent_id, vm))
            elif isinstance(info, dict):
                host.vms[vm] = info
                db.execute("INSERT OR REPLACE INTO vms VALUES (?, ?, ?)", (agent_id, vm, encode(info)))
            host.updated = time.time()
            self._save_host(db, host)

    def apply_domain_info(self, agent_id: str, vm: str, info: dict[str, Any]) -> None:
        """Record one VM's info at once (after an init), before its events arrive."""
        self._apply_domain(agent_id, vm, "defined", {"info": {k: v for k, v in info.items() if k != "graphics"}
                                                     | {"graphics": _public(info.get("graphics", {}))}})

    def set_maintenance(self, agent_id: str, on: bool) -> Hypervisor:
        """Put a hypervisor in or out of maintenance (placement skips it)."""
        host = self._hosts.setdefault(agent_id, Hypervisor(agent_id))
        host.maintenance = on
        with self._cache.transaction() as db:
            self._save_host(db, host)
        return host

    def forget(self, agent_id: str) -> None:
        """Drop a hypervisor whose key was deleted."""
        self._hosts.pop(agent_id, None)
        self._digests.pop(agent_id, None)
        with self._cache.transaction() as db:
            db.execute("DELETE FROM vms WHERE agent_id = ?", (agent_id,))
            db.execute("DELETE FROM hypervisors WHERE agent_id = ?", (agent_id,))

    @staticmethod
    def _save_host(db: sqlite3.Connection, host: Hypervisor) -> None:
        db.execute("INSERT OR REPLACE INTO hypervisors VALUES (?, ?, ?, ?, ?, ?)",
                         (host.agent_id, encode(host.node), int(host.available), host.error,
                          int(host.maintenance), host.updated))
