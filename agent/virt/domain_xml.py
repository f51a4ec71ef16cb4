"""Domain XML built with ElementTree from a validated VmSpec, never by pasting strings."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .disks import DiskPlan
from .profiles import NicProfileEntry
from .spec import VmSpec


@dataclass(frozen=True)
class Graphics:
    """A VNC console: listen address and password (port chosen by libvirt)."""

    listen: str
    password: str


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


# The seed CD-ROM sits on virtio-scsi: Debian's cloud kernel (and others) has no AHCI driver, so a
# SATA CD-ROM is invisible to it, while virtio-scsi is in every kernel that runs on KVM.
SEED_TARGET = "sdz"


def build_domain(spec: VmSpec, domain_type: str, disks: list[DiskPlan], nics: tuple[NicProfileEntry, ...],
                 graphics: Graphics | None, cdrom: str | None = None, console_log: Path | None = None) -> str:
    """The libvirt domain XML of a new VM; the serial console is also written to ``console_log``."""
    domain = ET.Element("domain", type=domain_type)
    _sub(domain, "name", spec.name)
    _sub(domain, "memory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "currentMemory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(spec.cpus))
    os_element = _sub(domain, "os")
    _sub(os_element, "type", "hvm")
    _sub(os_element, "boot", dev="hd")
    # The firmware writes to the serial console too, so a disk that does not boot says so in the log.
    _sub(os_element, "bios", useserial="yes")
    features = _sub(domain, "features")
    _sub(features, "acpi")  # lets virt.shutdown ask the guest to power off
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    devices = _sub(domain, "devices")
    for disk in disks:
        _disk(devices, disk)
    if cdrom:
        _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
        seed = _disk(devices, DiskPlan(path=Path(cdrom), format="raw", bus="scsi", target=SEED_TARGET,
                                       device="cdrom"))
        # Placed by hand: from the name sdz libvirt derives controller 3, and adds lsilogic controllers
        # (no driver in the cloud kernel either) to reach it. Target 1 is clear of disks sda..sdg (target 0).
        _sub(seed, "address", type="drive", controller="0", bus="0", target="1", unit="0")
    for nic in nics:
        _nic(devices, nic)
    if graphics is not None:
        element = _sub(devices, "graphics", type="vnc", port="-1", autoport="yes", listen=graphics.listen,
                       passwd=graphics.password)
        _sub(element, "listen", type="address", address=graphics.listen)
    serial = _sub(devices, "serial", type="pty")
    if console_log is not None:
        # virtlogd keeps the file (and rotates it): `saltmarsh virt console-log NAME` shows its tail.
        _sub(serial, "log", file=str(console_log), append="on")
    _sub(serial, "target", port="0")
    _sub(devices, "console", type="pty")
    return ET.tostring(domain, encoding="unicode")


def _disk(devices: ET.Element, disk: DiskPlan) -> ET.Element:
    element = _sub(devices, "disk", type="file", device=disk.device)
    _sub(element, "driver", name="qemu", type=disk.format)
    _sub(element, "source", file=str(disk.path))
    _sub(element, "target", dev=disk.target, bus=disk.bus)
    if disk.device == "cdrom":
        _sub(element, "readonly")
    return element


def _nic(devices: ET.Element, nic: NicProfileEntry) -> None:
    element = _sub(devices, "interface", type=nic.type)
    if nic.type == "bridge":
        _sub(element, "source", bridge=nic.source)
    elif nic.type == "network":
        _sub(element, "source", network=nic.source)
    # "user": QEMU's own NAT, no source (the guest reaches the host's loopback at 10.0.2.2).
    _sub(element, "model", type=nic.model)
