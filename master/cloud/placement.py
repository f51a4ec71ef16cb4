"""Where a new VM goes: filters drop hypervisors (each with its reason), weighers rank the rest.

Filters: online, libvirt answering, not in maintenance, labels, enough free
memory and CPUs. Weighers: most free memory first (as Salt does), then fewest
VMs, then id. Free resources subtract reservations of inits still in flight,
so two concurrent inits cannot both land on a host that holds only one: the
pick and the reservation happen together, with no await between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .inventory import Hypervisor, Inventory


@dataclass(frozen=True)
class Request:
    """What a new VM needs."""

    name: str
    cpus: int
    memory_mib: int
    labels: dict[str, str] = field(default_factory=dict)
    host: str | None = None


@dataclass
class Candidate:
    """One hypervisor as placement saw it."""

    host: str
    freemem: int
    freecpu: int
    vms: int
    dropped: str = ""

    def as_dict(self) -> dict[str, Any]:
        """For the CLI's --dry-run."""
        return {"host": self.host, "freemem": self.freemem, "freecpu": self.freecpu, "vms": self.vms,
                "dropped": self.dropped}


@dataclass
class Decision:
    """The candidates, why each dropped one was dropped, and the choice (None if nobody fits)."""

    candidates: list[Candidate]
    choice: str | None

    def as_dict(self) -> dict[str, Any]:
        """For the CLI's --dry-run."""
        return {"choice": self.choice, "candidates": [c.as_dict() for c in self.candidates]}


class Placement:
    """Chooses hypervisors for new VMs and holds reservations until each init finishes."""

    def __init__(self, inventory: Inventory, is_up: Callable[[str], bool], labels: Callable[[str], dict[str, str]]):
        self._inventory = inventory
        self._is_up = is_up
        self._labels = labels
        self._reserved: dict[str, dict[str, tuple[int, int]]] = {}

    def decide(self, request: Request) -> Decision:
        """Rank every hypervisor for ``request`` without reserving anything."""
        candidates = [self._candidate(h, request) for h in self._inventory.hosts()]
        fitting = [c for c in candidates if not c.dropped]
        fitting.sort(key=lambda c: (-c.freemem, c.vms, c.host))
        order = {c.host: i for i, c in enumerate(fitting)}
        candidates.sort(key=lambda c: (c.dropped != "", order.get(c.host, 0), c.host))
        return Decision(candidates, fitting[0].host if fitting else None)

    def reserve(self, request: Request) -> Decision:
        """Decide and, if a host fits, reserve the VM's memory and CPUs on it."""
        decision = self.decide(request)
        if decision.choice is not None:
            self._reserved.setdefault(decision.choice, {})[request.name] = (request.memory_mib, request.cpus)
        return decision

    def release(self, host: str, name: str) -> None:
        """Drop a reservation once its init finished (the inventory now counts the VM, or it failed)."""
        self._reserved.get(host, {}).pop(name, None)

    def _candidate(self, host: Hypervisor, request: Request) -> Candidate:
        # A reserved VM whose definition event has reached the inventory is counted there already.
        reserved = [r for name, r in self._reserved.get(host.agent_id, {}).items() if name not in host.vms]
        candidate = Candidate(
            host.agent_id,
            host.freemem - sum(m for m, _ in reserved),
            host.freecpu - sum(c for _, c in reserved),
            len(host.vms) + len(reserved),
        )
        candidate.dropped = self._why_not(host, candidate, request)
        return candidate

    def _why_not(self, host: Hypervisor, candidate: Candidate, request: Request) -> str:
        labels = self._labels(host.agent_id)
        missing = {k: v for k, v in request.labels.items() if labels.get(k) != v}
        checks = (
            (request.host is not None and request.host != host.agent_id, f"not the requested host {request.host}"),
            (not self._is_up(host.agent_id), "agent offline"),
            (not host.available, f"libvirt unavailable: {host.error or 'no inventory yet'}"),
            (host.maintenance, "in maintenance"),
            (bool(missing), f"labels do not match {missing}"),
            (candidate.freemem < request.memory_mib,
             f"only {candidate.freemem} MiB free, needs {request.memory_mib}"),
            (candidate.freecpu < request.cpus, f"only {candidate.freecpu} CPUs free, needs {request.cpus}"),
        )
        return next((reason for failed, reason in checks if failed), "")
