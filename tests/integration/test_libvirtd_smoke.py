"""Smoke test of the real libvirtd + QEMU: a tiny diskless-OS domain through its whole lifecycle."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import libvirt
import pytest

from ..realvirt import ensure_event_loop

if TYPE_CHECKING:
    from .conftest import RealVirt

pytestmark = pytest.mark.integration

EVENT_TIMEOUT = 10.0


def domain_xml(name: str, domain_type: str, disk: Path) -> str:
    return f"""
<domain type='{domain_type}'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <graphics type='vnc' autoport='yes' listen='127.0.0.1'/>
  </devices>
</domain>"""


class LifecycleEvents:
    """Collects (event, detail) lifecycle events for one domain name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[tuple[int, int]] = []
        self.cond = threading.Condition()

    def callback(self, conn: object, dom: object, event: int, detail: int, opaque: object) -> None:
        if dom.name() == self.name:  # type: ignore[attr-defined]
            with self.cond:
                self.events.append((event, detail))
                self.cond.notify_all()

    def wait_for(self, event: int, detail: int | None = None, timeout: float = EVENT_TIMEOUT) -> None:
        def seen() -> bool:
            return any(e == event and (detail is None or d == detail) for e, d in self.events)

        with self.cond:
            if not self.cond.wait_for(seen, timeout):
                pytest.fail(f"no lifecycle event ({event}, {detail}) within {timeout} s; got {self.events}")


def wait_state(dom: object, state: int, timeout: float = EVENT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while dom.state()[0] != state:  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            pytest.fail(f"domain state {dom.state()} (wanted {state}) after {timeout} s")  # type: ignore[attr-defined]
        time.sleep(0.02)


def test_connects(real_libvirtd: RealVirt) -> None:
    conn = libvirt.open(real_libvirtd.uri)
    try:
        assert conn.getType() == "QEMU"
        assert conn.getLibVersion() >= 9_000_000
        caps = conn.getCapabilities()
        assert f"<domain type='{real_libvirtd.domain_type}'" in caps
        if Path("/dev/kvm").exists():
            # the fixture gave /dev/kvm to group kvm, so QEMU (libvirt-qemu:kvm) can use it
            assert real_libvirtd.domain_type == "kvm"
    finally:
        conn.close()


def test_domain_lifecycle(real_libvirtd: RealVirt, image_dir: Path) -> None:
    ensure_event_loop()  # before libvirt.open, or the connection delivers no events
    disk = real_libvirtd.blank_qcow2(image_dir / "disk.qcow2", "64M")
    name = f"{real_libvirtd.prefix}smoke-{uuid.uuid4().hex[:8]}"
    events = LifecycleEvents(name)

    conn = libvirt.open(real_libvirtd.uri)
    try:
        cb_id = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, events.callback, None)
        try:
            dom = conn.defineXML(domain_xml(name, real_libvirtd.domain_type, disk))
            try:
                events.wait_for(libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_DEFINED_ADDED)
                assert not dom.isActive()

                dom.create()
                events.wait_for(libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED)
                wait_state(dom, libvirt.VIR_DOMAIN_RUNNING)
                assert dom.isActive()
                assert name in [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]

                if real_libvirtd.domain_type == "kvm":
                    import libvirt_qemu

                    reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, '{"execute": "query-kvm"}', 0))
                    assert reply["return"] == {"enabled": True, "present": True}

                dom.suspend()
                events.wait_for(libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED)
                assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED

                dom.resume()
                events.wait_for(libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED)
                assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING

                graphics = ET.fromstring(dom.XMLDesc(0)).find("./devices/graphics[@type='vnc']")
                assert graphics is not None
                port = int(graphics.get("port", "-1"))
                assert 5900 <= port < 65536
                assert graphics.get("listen") == "127.0.0.1"
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.settimeout(5)
                    assert s.recv(12).startswith(b"RFB ")

                dom.destroy()
                events.wait_for(libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED)
                assert not dom.isActive()
            finally:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            events.wait_for(libvirt.VIR_DOMAIN_EVENT_UNDEFINED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED_REMOVED)
            assert name not in [d.name() for d in conn.listAllDomains(0)]
        finally:
            conn.domainEventDeregisterAny(cb_id)
    finally:
        conn.close()
