"""``bridge``: a Linux bridge over a device, the device's addresses moved to it, persisted in the host's config.

The facets are what the kernel has now (the bridge there, the device its port, the addresses
on the bridge and none left on the device, the gateway) and the persisted config (a digest of
the files netconfig.py writes, with their diff as detail), so a dry run lists exactly what a
run would change, and a second run finds nothing. A device that does not exist fails the state
before anything is read further or written.

**No stranded hosts.** When the route to the master goes through the device (or the bridge),
the change is guarded: the files it replaces are kept on disk (``rollback_dir``, so a helper
that restarts meanwhile restores them at its start), the change is applied, and the helper
asks the agent to reach the master again (System.confirm). No word within
``rollback_seconds``: the old files come back, the bridge goes (if it was not there before),
and the state is ``rolled_back`` with the reason. A change that fails half-way is undone the
same way, guarded or not.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
from functools import cached_property
from pathlib import Path

import msgspec

from saltmarsh.protocol.states import BridgeState, Change

from ..errors import RolledBack, StateError
from . import ABSENT, Facets, Kind
from .files import digest, write_atomic
from .links import Link, read_link, route_to
from .netconfig import Backend, Ifupdown, Networkd, Plan, Snapshot, detect, snapshot
from .system import System, ensure_dir

log = logging.getLogger(__name__)


class Pending(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A guarded change not yet confirmed: what to put back if the helper restarts before it is."""

    backend: str
    state: str
    bridge: str
    device: str
    saved: dict[str, str | None]
    bridge_was_there: bool


class Bridge(Kind[BridgeState]):
    """Makes the bridge through the host's own network config (systemd-networkd or ifupdown)."""

    request = BridgeState

    @cached_property
    def backend(self) -> Backend:
        """The host's network config backend, found once per run."""
        return detect(self.system)

    def _links(self, state: BridgeState) -> tuple[Link, Link | None]:
        device = read_link(self.system, state.device)
        if device is None:
            raise StateError(f"no device {state.device} on this host: bridge {state.bridge} not made, nothing changed")
        bridge = read_link(self.system, state.bridge)
        if bridge is not None and bridge.kind != "bridge":
            raise StateError(f"{state.bridge} exists and is a {bridge.kind or 'plain'} device, not a bridge")
        return device, bridge

    def plan(self, state: BridgeState) -> Plan:
        """The bridge as it should be: the state's addresses, else the device's, else those the bridge has."""
        device, bridge = self._links(state)
        if state.addresses is not None:
            addresses = tuple(_normal(a) for a in state.addresses)
        else:
            addresses = device.addresses or (bridge.addresses if bridge is not None else ())
        gateway = state.gateway or device.gateway or (bridge.gateway if bridge is not None else "")
        return Plan(state=state.name, bridge=state.bridge, device=state.device, mac=device.mac,
                    addresses=addresses, gateway=gateway)

    def current(self, state: BridgeState) -> Facets:
        """The kernel's bridge, port, addresses and gateway now, and the digest of the config files now."""
        device, bridge = self._links(state)
        files = self.backend.files(self.plan(state))
        return {"bridge": "present" if bridge is not None else "absent",
                "port of": device.master or ABSENT,
                "addresses": _shown(bridge.addresses if bridge is not None else ()),
                "device addresses": _shown(device.addresses),
                "gateway": (bridge.gateway if bridge is not None else "") or ABSENT,
                "config": _digest(snapshot(list(files)))}

    def desired(self, state: BridgeState) -> Facets:
        """The bridge present with the plan's addresses, the device its port with none, our config files."""
        plan = self.plan(state)
        files = self.backend.files(plan)
        return {"bridge": "present", "port of": state.bridge, "addresses": _shown(plan.addresses),
                "device addresses": ABSENT, "gateway": plan.gateway or ABSENT,
                "config": _digest({str(path): text for path, text in files.items()})}

    def detail(self, state: BridgeState, changes: dict[str, Change]) -> str:
        """The config files' diff, and which backend writes them."""
        if "config" not in changes:
            return ""
        lines = [f"# {self.backend.name}"]
        for path, text in self.backend.files(self.plan(state)).items():
            old = snapshot([path])[str(path)]
            lines += difflib.unified_diff((old or "").splitlines(), text.splitlines(),
                                          str(path) if old is not None else "/dev/null", str(path), lineterm="")
        return "\n".join(lines)

    def apply(self, state: BridgeState, changes: dict[str, Change]) -> None:
        """Apply the plan; undo it if it fails, or if it is guarded and the agent does not confirm in time."""
        plan = self.plan(state)
        saved = snapshot(list(self.backend.files(plan)))
        bridge_was_there = read_link(self.system, state.bridge) is not None
        guarded = self._guards_master(state)
        keep = self._keep(plan, saved, bridge_was_there) if guarded else None
        try:
            self.backend.apply(self.system, plan, saved)
        except StateError as exc:
            self.backend.restore(self.system, plan, saved, bridge_was_there)
            _discard(keep)
            raise StateError(f"{exc} (the old network config was restored)") from exc
        if guarded and not self.system.confirm(state.name, state.rollback_seconds):
            log.warning("bridge %s: the agent did not reach the master at %s within %.0f s: rolling back",
                        state.bridge, self.system.master_ip, state.rollback_seconds)
            self.backend.restore(self.system, plan, saved, bridge_was_there)
            _discard(keep)
            raise RolledBack(f"the agent did not reach the master at {self.system.master_ip} within "
                             f"{state.rollback_seconds:g} s of {state.bridge} being applied: the old network "
                             "config was restored")
        _discard(keep)

    def _guards_master(self, state: BridgeState) -> bool:
        """True if the route to the master goes through the device or the bridge (the change may cut it)."""
        if not self.system.master_ip:
            return False
        dev, _source = route_to(self.system, self.system.master_ip)
        return dev in (state.device, state.bridge)

    def _keep(self, plan: Plan, saved: Snapshot, bridge_was_there: bool) -> Path:
        ensure_dir(self.system.rollback_dir)
        path = self.system.rollback_dir / f"{plan.bridge}.json"
        pending = Pending(backend=self.backend.name, state=plan.state, bridge=plan.bridge, device=plan.device,
                          saved=saved, bridge_was_there=bridge_was_there)
        write_atomic(path, msgspec.json.encode(pending), 0o600, 0, 0)
        return path


def restore_pending(system: System) -> list[str]:
    """Restore every guarded change a helper left unconfirmed (it stopped meanwhile); the bridges restored."""
    restored = []
    for path in sorted(system.rollback_dir.glob("*.json")) if system.rollback_dir.is_dir() else []:
        try:
            pending = msgspec.json.decode(path.read_bytes(), type=Pending)
        except (OSError, msgspec.DecodeError) as exc:
            log.error("%s: unreadable pending rollback, left alone: %s", path, exc)
            continue
        backend: Backend = (Networkd(system.network_dir) if pending.backend == Networkd.name
                            else Ifupdown(system.interfaces_file))
        plan = Plan(state=pending.state, bridge=pending.bridge, device=pending.device, mac="", addresses=(),
                    gateway="")
        try:
            backend.restore(system, plan, pending.saved, pending.bridge_was_there)
        except StateError as exc:
            log.error("bridge %s: restoring its old network config failed: %s", pending.bridge, exc)
            continue
        path.unlink()
        log.warning("bridge %s: an unconfirmed change was found at start: the old network config is back",
                    pending.bridge)
        restored.append(pending.bridge)
    return restored


def _discard(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_interface(address))
    except ValueError as exc:
        raise StateError(f"{address!r} is not an address with a prefix length") from exc


def _shown(addresses: tuple[str, ...]) -> str:
    return ", ".join(sorted(addresses)) or ABSENT


def _digest(files: dict[str, str | None]) -> str:
    """One digest of a set of files (each path with its content, or its absence)."""
    joined = "".join(f"{path}\0{'-' if text is None else text}\0" for path, text in sorted(files.items()))
    return "absent" if all(text is None for text in files.values()) else digest(joined.encode())
