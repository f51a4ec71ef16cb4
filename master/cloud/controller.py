"""The cloud controller: host info, list, query, init with placement, and operations by VM name.

Reads come from the inventory (no hypervisor is polled per call); writes are
jobs sent to the one hypervisor that holds the VM, or that placement chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from saltmarsh.protocol.jobcontrol import KILLED, TIMED_OUT
from saltmarsh.protocol.messages import Target
from saltmarsh.protocol.redaction import redact
from saltmarsh.protocol.tags import agent_tag

from ..agents.keys import KeyManager
from ..agents.presence import Presence
from ..events.bus import EventBus
from ..jobs.router import JobRouter
from ..service.errors import Conflict, Invalid, NotFound, Refused, ServiceError, TimedOut, Unavailable
from ..service.types.vms import InitRequest
from .inventory import Hypervisor, Inventory
from .placement import Placement, Request
from .seeding import seed_address

log = logging.getLogger(__name__)

VM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
OPERATIONS = {"start", "shutdown", "stop", "reboot", "reset", "pause", "resume", "purge"}
RESYNC_TIMEOUT = 30.0
SEED_TOKEN_TTL = 24 * 3600.0  # a seeded VM may take a while to boot and install its agent
MAX_VM_CPUS = 4096  # libvirt's own ceiling for a KVM guest's vCPUs
MAX_VM_MEMORY_MIB = 16 * 1024 * 1024  # 16 TiB


@dataclass(frozen=True)
class SeedAddresses:
    """Where a seeded guest may be told the master is: master.yaml's seed.master_address, and the interface."""

    configured: str
    interface: str


class Controller:
    """Answers the ``virt`` commands from the inventory and routes work to hypervisors."""

    def __init__(self, inventory: Inventory, placement: Placement, jobs: JobRouter, presence: Presence,
                 keys: KeyManager, master_key: str, seed: SeedAddresses, bus: EventBus) -> None:
        self._keys = keys
        self._bus = bus
        self._master_key = master_key
        self._seed = seed
        self._inventory = inventory
        self._placement = placement
        self._jobs = jobs
        self._presence = presence

    async def _resync(self, agent_id: str) -> None:
        try:
            _jid, returns = await self._jobs.run_and_wait(
                Target(kind="id", ids=[agent_id]), "virt.full_info", {}, RESYNC_TIMEOUT
            )
        except ServiceError as exc:
            log.info("no inventory resync for %s: %s", agent_id, exc)
            return
        ret = returns.get(agent_id)
        if ret is None:
            log.warning("inventory resync of %s: no answer within %.0f s", agent_id, RESYNC_TIMEOUT)
        elif ret["success"]:
            self._inventory.apply_snapshot(agent_id, {"available": True, **ret["result"]})
        elif ret["error"]["type"] in (TIMED_OUT, KILLED):
            # The agent gave up on the job (a slow or wedged libvirt), which says nothing of whether
            # libvirt is there: what the inventory holds stays, and the next resync tries again.
            log.warning("inventory resync of %s: %s (the inventory keeps what it had)", agent_id,
                        ret["error"]["message"])
        else:
            self._inventory.apply_snapshot(agent_id, {"available": False, "error": ret["error"]["message"]})

    def host_info(self) -> dict[str, Any]:
        """Every hypervisor: node facts, free memory and CPUs, VM count, state."""
        return {h.agent_id: self._host_summary(h) for h in self._inventory.hosts()}

    def _host_summary(self, host: Hypervisor) -> dict[str, Any]:
        return {"node_info": host.node, "freemem": host.freemem, "freecpu": host.freecpu, "vms": len(host.vms),
                "up": self._presence.is_up(host.agent_id), "libvirt": host.available, "maintenance": host.maintenance,
                **({"error": host.error} if host.error else {})}

    def list_vms(self) -> dict[str, dict[str, str]]:
        """{hypervisor: {vm: state}}."""
        return {h.agent_id: {n: v.get("state", "") for n, v in sorted(h.vms.items())} for h in self._inventory.hosts()}

    def query(self, name: str | None = None) -> dict[str, Any]:
        """Per hypervisor: free resources, node info and each VM's info (one VM if named)."""
        result = {}
        for host in self._inventory.hosts():
            vms = {n: self._with_agent(n, v) for n, v in sorted(host.vms.items()) if name is None or n == name}
            if name is not None and not vms:
                continue
            result[host.agent_id] = {"freecpu": host.freecpu, "freemem": host.freemem, "node_info": host.node,
                                     "vm_info": vms}
        if name is not None and not result:
            raise NotFound(f"no VM named {name!r} on any hypervisor")
        return result

    def _with_agent(self, vm: str, info: dict[str, Any]) -> dict[str, Any]:
        """A VM's info, linked to the agent inside it (a seeded guest's agent has the VM's name)."""
        if self._keys.store.accepted_key(vm) is None:
            return info
        return {**info, "agent": {"id": vm, "up": self._presence.is_up(vm)}}

    async def set_role(self, agent_id: str, role: str) -> None:
        """Make an accepted agent a ``hypervisor`` (listed, placed on) or a ``guest`` (neither)."""
        if role not in ("hypervisor", "guest"):
            raise Invalid(f"unknown role {role!r}: hypervisor or guest")
        if self._keys.store.accepted_key(agent_id) is None:
            raise NotFound(f"no accepted key for agent {agent_id!r}")
        self._keys.set_guest(agent_id, role == "guest")
        if role == "guest":
            self._inventory.forget(agent_id)
        elif self._presence.is_up(agent_id):
            await self._resync(agent_id)

    def maintenance(self, agent_id: str, on: bool) -> bool:
        """Put a hypervisor in or out of maintenance; whether it is in maintenance now."""
        if self._inventory.get(agent_id) is None:
            raise NotFound(f"no hypervisor {agent_id!r} in the inventory")
        return self._inventory.set_maintenance(agent_id, on).maintenance

    async def init(self, request: InitRequest) -> dict[str, Any]:
        """Place and create a VM; --dry-run only explains the placement."""
        if not VM_NAME.fullmatch(request.name):
            raise Invalid(f"invalid VM name {request.name!r}: letters, digits, . _ - (at most 64)")
        holders = self._inventory.locate(request.name)
        if holders:
            raise Conflict(f"a VM named {request.name!r} already exists on {', '.join(holders)}")
        seeded = request.seed
        # Refused before anything is placed, issued or created: a guest told an unusable address never joins.
        address = seed_address(request.master_address, self._seed.configured, self._seed.interface) \
            if seeded else None
        wanted = Request(request.name, request.cpus, request.memory_mib, request.labels, request.host)
        decision = self._placement.decide(wanted) if request.dry_run else self._placement.reserve(wanted)
        if request.dry_run:
            return {"dry_run": True, **decision.as_dict()}
        if decision.choice is None:
            reasons = "; ".join(f"{c.host}: {c.dropped}" for c in decision.candidates) or "no hypervisors known"
            raise Unavailable(f"no hypervisor can hold {request.name} ({reasons})")
        host = decision.choice
        options = dict(request.options)
        if seeded:
            token, _expires = self._keys.issue_token(request.name, SEED_TOKEN_TTL)
            options.update(join_token=token, master_key=self._master_key, master_address=address)
        try:
            ret = await self.run_on(host, "virt.init", {"name": request.name, "cpus": request.cpus,
                                                      "memory_mib": request.memory_mib, "image": request.image,
                                                      **options}, request.timeout, request.name)
        finally:
            self._placement.release(host, request.name)
        self._inventory.apply_domain_info(host, request.name, ret)
        # The console password is shown by `virt vnc NAME` only (protocol/redaction.py).
        seed = {"seed": {"master_address": address}} if seeded else {}
        return {"host": host, "vm": redact(ret), **seed, **decision.as_dict()}

    async def operate(self, operation: str, name: str, timeout: float) -> dict[str, Any]:
        """Run a lifecycle operation (or info/vnc) on the hypervisor that holds ``name``."""
        host = self.holder(name)
        if operation in OPERATIONS:
            result = await self.run_on(host, f"virt.{operation}", {"name": name}, timeout, name)
            if operation == "purge":
                # The VM is gone: a seed token it never used must not let anyone else join as it.
                self._keys.revoke_tokens(name)
        elif operation == "info":
            result = (await self.run_on(host, "virt.vm_info", {"name": name}, timeout, name))[name]
        elif operation == "vnc":
            result = await self.run_on(host, "virt.get_graphics", {"name": name, "secure": True}, timeout, name)
        else:
            raise Invalid(f"unknown operation {operation!r}")
        return {"host": host, "vm": name, "result": result}

    async def wait_joined(self, name: str, timeout: float, console_lines: int = 20) -> dict[str, Any]:
        """Wait until the agent inside VM ``name`` is up; if it is not within ``timeout``, say so with the console."""
        started = time.monotonic()
        up = asyncio.Event()
        handle = self._bus.subscribe(agent_tag(name, "up"), lambda _event: up.set())
        try:
            if not self._presence.is_up(name):
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(up.wait(), timeout)
        finally:
            self._bus.unsubscribe(handle)
        waited = round(time.monotonic() - started, 1)
        if self._presence.is_up(name):
            return {"name": name, "joined": True, "after": waited}
        try:
            console = (await self.console_log(name, console_lines))["lines"]
        except ServiceError as exc:
            console = [f"(no console log: {exc})"]
        return {"name": name, "joined": False, "after": waited, "console": console}

    async def console_log(self, name: str, lines: int, timeout: float = 30.0) -> dict[str, Any]:
        """The last ``lines`` lines of the serial console of VM ``name``, from its hypervisor."""
        host = self.holder(name)
        result = await self.run_on(host, "virt.console_log", {"name": name, "lines": lines}, timeout, name)
        return {"host": host, **result}

    def holder(self, name: str) -> str:
        """The one hypervisor holding ``name``; NotFound if none, Conflict if several, Unavailable if it is offline."""
        holders = self._inventory.locate(name)
        if not holders:
            raise NotFound(f"no VM named {name!r} on any hypervisor")
        if len(holders) > 1:
            raise Conflict(f"VM name {name!r} is ambiguous: it exists on {', '.join(holders)}")
        host = holders[0]
        if not self._presence.is_up(host):
            raise Unavailable(f"hypervisor {host} holding {name} is unreachable: {self._presence.why_silent(host)}")
        return host

    async def run_on(self, host: str, fun: str, kwargs: dict[str, Any], timeout: float, vm: str) -> Any:
        """Run ``fun`` on ``host`` and return its result.

        TimedOut if it did not answer in time, Refused (with the cause) if it failed.
        """
        _jid, returns = await self._jobs.run_and_wait(Target(kind="id", ids=[host]), fun, kwargs, timeout)
        ret = returns.get(host)
        if ret is None:
            raise TimedOut(f"hypervisor {host} did not answer {fun} {vm} within {timeout:.0f} s")
        if not ret["success"]:
            error = ret.get("error") or {}
            raise Refused(f"{fun} {vm} on {host} failed: {error.get('type', 'Error')}: {error.get('message', '')}")
        return ret["result"]
