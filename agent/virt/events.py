"""libvirt's own lifecycle events, relayed to the master's bus, and inventory snapshots.

libvirt's default event loop runs in its own thread. Callbacks only queue
(vm, event, detail); a second thread looks the VM up and fires
``saltmarsh/virt/<agent>/domain/<vm>/<event>`` with the VM's current info,
so the master's inventory follows every change without polling. When
libvirtd goes away, a watchdog reconnects, re-registers, and fires a full
``saltmarsh/virt/<agent>/inventory`` so the master's view is never stale. The same watchdog
looks every WEDGE_CHECK_SECONDS, while calls are in flight, for a connection whose calls are
stuck (agent/libvirt_conn.py) and replaces it the same way; with no call in flight it sleeps.

When the master's InventoryCheck comes (master/agents/resync.py), ``answer_check`` compares the
master's digest with that of the last snapshot taken here, which stands while nothing changed
(LibvirtHost.changes), and sends a snapshot only if the two differ.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from saltmarsh.protocol.inventory import inventory_digest

from ..errors import AgentError
from ..libvirt_conn import libvirt
from .host import LibvirtHost
from .inventory import domain_info, full_inventory

log = logging.getLogger(__name__)

EVENTS = ("defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown", "pmsuspended",
          "crashed")
DETAILS = {
    "defined": ("added", "updated", "renamed", "from_snapshot"),
    "undefined": ("removed", "renamed"),
    "started": ("booted", "migrated", "restored", "from_snapshot", "wakeup"),
    "suspended": ("paused", "migrated", "ioerror", "watchdog", "restored", "from_snapshot", "api_error",
                  "postcopy", "postcopy_failed"),
    "resumed": ("unpaused", "migrated", "from_snapshot", "postcopy"),
    "stopped": ("shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot"),
}
RECONNECT_SECONDS = 2.0
WEDGE_CHECK_SECONDS = 2.0

Fire = Callable[[str, Any], None]
_loop_started = False
_loop_lock = threading.Lock()


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once per process).

    Must happen before the first connection is opened, or that connection delivers no events.
    """
    global _loop_started
    with _loop_lock:
        if _loop_started or libvirt is None:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_loop, name="libvirt-events", daemon=True).start()
        _loop_started = True


def _run_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def event_name(event: int) -> str:
    """A lifecycle event number as a word."""
    return EVENTS[event] if 0 <= event < len(EVENTS) else f"event{event}"


def detail_name(event: str, detail: int) -> str:
    """A lifecycle detail number as a word (or the number when libvirt grew a new one)."""
    names = DETAILS.get(event, ())
    return names[detail] if 0 <= detail < len(names) else str(detail)


class DomainEventWatcher:
    """Registers for lifecycle events on every (re)opened connection and relays them."""

    def __init__(self, host: LibvirtHost, agent_id: str, fire: Fire) -> None:
        self._host = host
        self._agent_id = agent_id
        self._fire = fire
        self._queue: queue.Queue[tuple[str, str, str] | None] = queue.Queue()
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._wake = threading.Event()  # a call started, the connection closed, or stop()
        self._threads: list[threading.Thread] = []
        self._last: Taken | None = None
        self._check_lock = threading.Lock()  # one snapshot taken at a time

    def start(self) -> None:
        """Start the relay and watchdog threads; the first registration happens on first connect."""
        self._host.on_open(self._attach)
        self._host.on_busy(self._wake.set)
        for target, name in ((self._relay, "virt-events"), (self._watchdog, "virt-watchdog")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the threads."""
        self._stop.set()
        self._lost.set()
        self._wake.set()
        self._queue.put(None)

    def _attach(self, conn: Any) -> None:
        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
        conn.registerCloseCallback(self._on_close, None)
        self._lost.clear()

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        self._host.touch()
        name = event_name(event)
        self._queue.put((dom.name(), name, detail_name(name, detail)))

    def _on_close(self, _conn: Any, reason: int, _opaque: Any) -> None:
        log.warning("libvirt connection to %s closed (reason %d); reconnecting", self._host.uri, reason)
        self._host.forget()
        self._lost.set()
        self._wake.set()

    def _relay(self) -> None:
        while (item := self._queue.get()) is not None:
            vm, event, detail = item
            data: dict[str, Any] = {"vm": vm, "event": event, "detail": detail}
            if event != "undefined":
                data["info"] = self._info(vm)
            self._fire(f"saltmarsh/virt/{self._agent_id}/domain/{vm}/{event}", data)

    def _info(self, vm: str) -> dict[str, Any] | None:
        try:
            with self._host.call("look up", vm) as conn:
                return domain_info(conn.lookupByName(vm))
        except (AgentError, libvirt.libvirtError):
            return None  # gone again already: the next event says so

    def _watchdog(self) -> None:
        reported = False
        while not self._stop.is_set():
            if not self._lost.is_set():
                self._watch_calls()
                continue
            if self._stop.wait(RECONNECT_SECONDS):
                return
            try:
                self._host.connection()
            except AgentError as exc:
                if not reported:
                    log.warning("libvirt unreachable, retrying every %.0f s: %s", RECONNECT_SECONDS, exc)
                    reported = True
                continue
            reported = False
            log.info("libvirt connection to %s is back", self._host.uri)
            self.push_inventory()

    def _watch_calls(self) -> None:
        """Look for a wedged connection every WEDGE_CHECK_SECONDS while calls are in flight; sleep otherwise.

        An idle agent's watchdog does not wake at all: a swarm of 1,000 (agent/swarm.py) would
        otherwise wake 500 threads a second, each taking the GIL from the event loops.
        """
        self._wake.clear()  # before looking: a call that starts after the look sets it again
        if not self._host.in_flight():
            self._wake.wait()
            return
        if not self._lost.wait(WEDGE_CHECK_SECONDS) and self._host.replace_if_wedged():
            self._lost.set()

    def push_inventory(self) -> None:
        """Fire a full inventory snapshot (node, free resources, every VM); call from a worker thread."""
        with self._check_lock:
            self._push(self._snapshot())

    def answer_check(self, master_digest: bytes) -> None:
        """The master holds an inventory of this host with ``master_digest``: push ours if it differs.

        Call from a worker thread. The digest of the last snapshot stands for the current
        inventory while nothing here changed since (LibvirtHost.changes: a virt function ran,
        libvirt fired an event, the connection was opened again), so a check after a master
        restart costs no libvirt call at all.
        """
        with self._check_lock:
            last = self._last
            if last is not None and last.changes == self._host.changes and last.digest == master_digest:
                log.debug("inventory check: the master holds our last inventory, and nothing changed since")
                return
            snapshot = self._snapshot()
            if inventory_digest(snapshot) == master_digest:
                log.debug("inventory check: the master holds our inventory")
                return
            log.info("inventory check: the master's inventory of this host differs from ours: sending ours")
            self._push(snapshot)

    def _snapshot(self) -> dict[str, Any]:
        changes = self._host.changes
        try:
            self._host.connection()  # opening one counts as a change: not one this snapshot misses
            changes = self._host.changes  # read before the calls: a change during them leaves it stale
            snapshot: dict[str, Any] = {"available": True, **full_inventory(self._host)}
        except AgentError as exc:
            snapshot = {"available": False, "error": str(exc)}
            self._lost.set()  # the watchdog retries and pushes again once libvirt answers
        self._last = Taken(inventory_digest(snapshot), changes)
        return snapshot

    def _push(self, snapshot: dict[str, Any]) -> None:
        self._fire(f"saltmarsh/virt/{self._agent_id}/inventory", snapshot)


@dataclass(frozen=True)
class Taken:
    """The last inventory snapshot taken here: its digest, and the host's change count before it."""

    digest: bytes
    changes: int
