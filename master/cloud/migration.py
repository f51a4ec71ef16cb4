"""Migration orchestration: check the target, tell the source to migrate, confirm from both sides' events.

The master resolves where the VM lives, refuses a target that is the source,
offline, without libvirt, in maintenance, or short of memory, then runs
``virt.migrate`` on the source with the target's ``qemu+tls://`` URI. Success
is reported only once libvirt's own events confirm it: the target started or
resumed the VM (detail "migrated") and the source stopped it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from ..agents.presence import Presence
from ..config import VirtMasterFile
from ..events.bus import Event, EventBus
from ..service.errors import Conflict, NotFound, Refused, TimedOut, Unavailable
from ..service.types.vms import MigrateRequest
from .controller import Controller
from .inventory import Inventory

log = logging.getLogger(__name__)

CONFIRM_SECONDS = 15.0


def migrate_uri_for(target_uri: str) -> str:
    """Where QEMU's own migration stream goes when not tunnelled: the target's address, not its host name."""
    host = urlsplit(target_uri).hostname
    return f"tcp://{host}" if host else ""


def listen_address_for(target_uri: str) -> str:
    """The one address the target's QEMU listens on for the migration stream (and NBD disk copies).

    The same address the source is told to connect to, so QEMU does not listen on every address of the host.
    """
    return urlsplit(target_uri).hostname or ""


class Migrations:
    """Runs migrations between hypervisors and aborts them."""

    def __init__(self, controller: Controller, inventory: Inventory, presence: Presence, bus: EventBus,
                 settings: VirtMasterFile) -> None:
        self._controller = controller
        self._presence = presence
        self._inventory = inventory
        self._bus = bus
        self._settings = settings

    def uri_of(self, agent_id: str) -> str:
        """The libvirtd URI other hypervisors reach ``agent_id`` at."""
        return self._settings.migration_uris.get(agent_id, f"qemu+tls://{agent_id}/system")

    def plan(self, request: MigrateRequest) -> dict[str, Any]:
        """Where the VM is, where it goes, and why the target is fit; a typed error otherwise."""
        source = self._controller.holder(request.name)
        target = self._inventory.get(request.target)
        if request.target == source:
            raise Conflict(f"{request.name} already runs on {source}")
        if target is None:
            raise NotFound(f"no hypervisor {request.target!r} in the inventory")
        if not self._presence.is_up(request.target):
            raise Unavailable(f"target {request.target} is unreachable")
        if not target.available:
            raise Unavailable(f"target {request.target} has no libvirt: {target.error or 'no inventory yet'}")
        if target.maintenance:
            raise Refused(f"target {request.target} is in maintenance")
        vm = self._inventory.get(source).vms[request.name]  # type: ignore[union-attr]
        needed = int(vm.get("current_memory_mib", vm.get("memory_mib", 0)))
        if target.freemem < needed:
            raise Unavailable(f"target {request.target} has {target.freemem} MiB free, {request.name} needs {needed}")
        return {"vm": request.name, "source": source, "target": request.target,
                "target_uri": self.uri_of(request.target), "tunnelled": self._settings.tunnel,
                "memory_mib": needed, "target_freemem": target.freemem}

    async def migrate(self, request: MigrateRequest) -> dict[str, Any]:
        """Migrate and confirm from both sides' events; a typed error names the cause of a failure."""
        plan = self.plan(request)
        if request.dry_run:
            return {"dry_run": True, **plan}
        source, target = plan["source"], plan["target"]
        seen: dict[str, Event] = {}
        confirmed = asyncio.Event()

        def watch(event: Event) -> None:
            what = event.tag.rsplit("/", 1)[1]
            side = "source" if f"/{source}/" in event.tag else "target"
            if side == "target" and what in ("started", "resumed"):
                seen.setdefault("target", event)
            if side == "source" and what in ("stopped", "undefined"):
                seen.setdefault("source", event)
            if len(seen) == 2:
                confirmed.set()

        handles = [self._bus.subscribe(f"saltmarsh/virt/{host}/domain/{request.name}/", watch)
                   for host in (source, target)]
        try:
            result = await self._controller.run_on(source, "virt.migrate", {
                "name": request.name, "target_uri": plan["target_uri"], "live": not request.offline,
                "copy_storage": request.copy_storage, "max_downtime_ms": request.max_downtime_ms,
                "bandwidth_mib": request.bandwidth_mib, "postcopy": request.postcopy,
                "tunnelled": self._settings.tunnel, "unsafe": self._settings.migration_unsafe,
                "migrate_uri": migrate_uri_for(plan["target_uri"]),
                "listen_address": listen_address_for(plan["target_uri"]),
            }, request.timeout, request.name)
            try:
                await asyncio.wait_for(confirmed.wait(), CONFIRM_SECONDS)
            except TimeoutError as exc:
                raise TimedOut(f"libvirt reported {request.name} migrated, but the events of "
                                   f"{', '.join(s for s in ('source', 'target') if s not in seen)} did not confirm it "
                                   f"within {CONFIRM_SECONDS:.0f} s") from exc
        finally:
            for handle in handles:
                self._bus.unsubscribe(handle)
        log.info("migrated %s from %s to %s in %s s", request.name, source, target, result.get("seconds"))
        return {**plan, "result": result, "confirmed": {side: e.tag for side, e in seen.items()}}

    async def abort(self, name: str) -> dict[str, Any]:
        """Abort the running migration of ``name`` on its source."""
        source = self._controller.holder(name)
        result = await self._controller.run_on(source, "virt.migrate_abort", {"name": name}, 30.0, name)
        return {"vm": name, "source": source, "result": result}
