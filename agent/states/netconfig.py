"""The host's own network config for a bridge: systemd-networkd files or /etc/network/interfaces.

Whichever of the two manages the host's network (networkd running, else an interfaces file and
ifup) gets the bridge written its own way, so a reboot brings back what the state made:

* networkd: three files of ours in /etc/systemd/network, named ``00-saltmarsh-*`` so that they
  sort before the operator's (networkd uses the first .network file that matches a link): the
  bridge's .netdev (with the device's MAC, so the neighbours' ARP caches stay right), its
  .network (the addresses and gateway), and the device's .network (a port of the bridge, no
  address). Applied with ``networkctl reload``, which creates the new netdev and reconfigures
  the links whose file changed.
* ifupdown: the interfaces file itself, the device's stanza made ``inet manual`` and a stanza
  for the bridge appended that makes it with iproute2 (no bridge-utils needed). Applied by
  taking the device down under its old stanza and both up under the new.

A Snapshot holds the files as they were, so a rollback (bridge.py) puts back exactly them.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import StateError
from .files import write_atomic
from .links import read_link
from .system import COMMAND_ENV, System, ensure_dir

SETTLE_SECONDS = 20.0  # networkd configures links asynchronously after a reload
TOP_LEVEL = {"iface", "auto", "allow-hotplug", "allow-auto", "source", "source-directory", "mapping", "rename"}
Snapshot = dict[str, str | None]  # path -> its content before, None where there was no file


@dataclass(frozen=True)
class Plan:
    """The bridge as it should be: its name, its port, its MAC, its addresses and gateway."""

    state: str
    bridge: str
    device: str
    mac: str
    addresses: tuple[str, ...]
    gateway: str


class Networkd:
    """systemd-networkd."""

    name = "systemd-networkd"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def files(self, plan: Plan) -> dict[Path, str]:
        """Our three files with their wanted content."""
        head = f"# Written by saltmarsh host setup (state {plan.state}): {plan.device} bridged to {plan.bridge}.\n"
        mac = f"MACAddress={plan.mac}\n" if plan.mac else ""
        network = "".join(f"Address={address}\n" for address in plan.addresses)
        network += f"Gateway={plan.gateway}\n" if plan.gateway else ""
        base = self.directory / f"00-saltmarsh-{plan.bridge}"
        return {
            base.with_suffix(".netdev"): f"{head}[NetDev]\nName={plan.bridge}\nKind=bridge\n{mac}",
            base.with_suffix(".network"): f"{head}[Match]\nName={plan.bridge}\n\n[Network]\n{network}"
                                          "ConfigureWithoutCarrier=yes\n",
            self.directory / f"00-saltmarsh-{plan.device}.network":
                f"{head}[Match]\nName={plan.device}\n\n[Network]\nBridge={plan.bridge}\nLinkLocalAddressing=no\n",
        }

    def apply(self, system: System, plan: Plan, snapshot: Snapshot) -> None:
        """Write our files and have networkd make the bridge and reconfigure the device."""
        ensure_dir(self.directory)
        write_files(self.files(plan))
        system.run(["networkctl", "reload"])
        system.run(["networkctl", "reconfigure", plan.device])
        settle(system, plan)

    def restore(self, system: System, plan: Plan, snapshot: Snapshot, bridge_was_there: bool) -> None:
        """Put the files back, remove a bridge that was not there before (networkd never does), reconfigure."""
        restore_files(snapshot)
        system.run(["networkctl", "reload"])
        if not bridge_was_there:
            system.run(["ip", "link", "del", "dev", plan.bridge], check=False)
        system.run(["networkctl", "reconfigure", plan.device], check=False)


class Ifupdown:
    """Debian's ifupdown and /etc/network/interfaces."""

    name = "ifupdown"

    def __init__(self, path: Path) -> None:
        self.path = path

    def files(self, plan: Plan) -> dict[Path, str]:
        """The interfaces file with the device made a port and the bridge's stanza."""
        return {self.path: render_interfaces(_read(self.path) or "", plan)}

    def apply(self, system: System, plan: Plan, snapshot: Snapshot) -> None:
        """The device down under its old stanza, the new file, then the device and the bridge up."""
        system.run(["ifdown", "--force", plan.device], check=False)  # it may not have been up
        write_files(self.files(plan))
        system.run(["ifup", plan.device])
        system.run(["ifup", plan.bridge])
        settle(system, plan)

    def restore(self, system: System, plan: Plan, snapshot: Snapshot, bridge_was_there: bool) -> None:
        """The bridge down under the new stanza, the old file back, the device up as it was."""
        system.run(["ifdown", "--force", plan.bridge], check=False)
        if not bridge_was_there:
            system.run(["ip", "link", "del", "dev", plan.bridge], check=False)
        restore_files(snapshot)
        system.run(["ifup", plan.device], check=False)


Backend = Networkd | Ifupdown


def detect(system: System) -> Backend:
    """The backend that manages this host's network; StateError if neither does."""
    if system.run(["systemctl", "is-active", "systemd-networkd.service"], check=False).stdout.strip() == "active":
        return Networkd(system.network_dir)
    if system.interfaces_file.exists() and shutil.which("ifup", path=COMMAND_ENV["PATH"]):
        return Ifupdown(system.interfaces_file)
    raise StateError("neither systemd-networkd (not running) nor ifupdown (no ifup and "
                     f"{system.interfaces_file}) manages this host's network: cannot persist a bridge")


def render_interfaces(text: str, plan: Plan) -> str:
    """``text`` with the device's stanzas made one ``inet manual`` and the bridge's stanza (re)appended."""
    out: list[str] = []
    skipping = False
    device_seen = False
    for line in text.splitlines():
        words = line.split()
        if words and not line[0].isspace() and words[0] in TOP_LEVEL:
            skipping = False
            if words[0] == "iface" and len(words) > 1 and words[1] in (plan.device, plan.bridge):
                skipping = True
                if words[1] == plan.device and not device_seen:
                    out.append(f"iface {plan.device} inet manual")
                    device_seen = True
                continue
            if words[0] == "auto" and words[1:] == [plan.bridge]:
                continue
        if not skipping:
            out.append(line)
    while out and not out[-1].strip():
        out.pop()
    if not device_seen:
        out.append(f"iface {plan.device} inet manual")
    return "\n".join([*out, "", *bridge_stanza(plan)]) + "\n"


def bridge_stanza(plan: Plan) -> list[str]:
    """The bridge's ifupdown stanza: made, its port added and up, with its addresses and gateway."""
    first, *more = plan.addresses or ("",)
    method = "static" if first else "manual"
    mac = f" address {plan.mac}" if plan.mac else ""
    lines = [f"auto {plan.bridge}", f"iface {plan.bridge} inet {method}",
             f"    # written by saltmarsh host setup (state {plan.state})"]
    if first:
        lines.append(f"    address {first}")
    if plan.gateway:
        lines.append(f"    gateway {plan.gateway}")
    lines += [f"    pre-up ip link add name {plan.bridge}{mac} type bridge 2>/dev/null || true",
              f"    pre-up ip link set dev {plan.device} master {plan.bridge}",
              f"    pre-up ip link set dev {plan.device} up"]
    lines += [f"    up ip addr add {address} dev {plan.bridge}" for address in more]
    lines.append(f"    post-down ip link del dev {plan.bridge} 2>/dev/null || true")
    return lines


def settle(system: System, plan: Plan) -> None:
    """Wait until the kernel has the bridge as planned, then take any address left on the device off it."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        bridge, device = read_link(system, plan.bridge), read_link(system, plan.device)
        ready = (bridge is not None and device is not None and device.master == plan.bridge
                 and set(plan.addresses) <= set(bridge.addresses))
        if ready or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for address in device.addresses if device is not None and ready else ():
        system.run(["ip", "addr", "del", address, "dev", plan.device], check=False)


def snapshot(paths: list[Path]) -> Snapshot:
    """The content of each of ``paths`` now (None if missing)."""
    return {str(path): _read(path) for path in paths}


def write_files(files: dict[Path, str]) -> None:
    """Write each file atomically, 0644 root."""
    for path, text in files.items():
        write_atomic(path, text.encode(), 0o644, 0, 0)


def restore_files(saved: Snapshot) -> None:
    """Put every file of ``saved`` back as it was (removing those that were not there)."""
    for name, text in saved.items():
        if text is None:
            Path(name).unlink(missing_ok=True)
        else:
            write_atomic(Path(name), text.encode(), 0o644, 0, 0)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"{path}: {exc.strerror or exc}") from exc
