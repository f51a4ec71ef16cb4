"""The cloud controller on a real libvirtd + QEMU: init with a qcow2 overlay and VNC, events, operations by name."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ..cluster import Cluster, EventRecorder, wait_until
from .conftest import RealVirt

pytestmark = pytest.mark.integration


def test_tiny_vm_on_real_qemu(real_libvirtd: RealVirt, image_dir: Path, tmp_path: Path) -> None:
    file_root = tmp_path / "file_root"
    file_root.mkdir()
    real_libvirtd.blank_qcow2(file_root / "blank.qcow2", "64M")
    cluster = Cluster(tmp_path / "cluster", file_roots=[str(file_root)])
    cluster.start_master()
    try:
        vm = f"{real_libvirtd.prefix}tiny"
        cluster.start_agents("kvm1", libvirt_uri=real_libvirtd.uri,
                             virt={"vm_dir": str(image_dir / "vms"), "images_dir": str(image_dir / "cache"),
                                   "nic_profiles": {"default": []}})
        wait_until(lambda: cluster.cli_json("virt", "host-info").get("kvm1", {}).get("libvirt"),
                   what="the real hypervisor in the inventory")
        recorder = EventRecorder(cluster, "saltmarsh/virt/kvm1/")
        recorder.ready("kvm1", "saltmarsh/virt/kvm1/probe")

        created = cluster.cli_json("virt", "init", vm, "1", "128", "master://blank.qcow2", "--enable-qcow",
                                   "--enable-vnc", "--timeout", "120")
        assert created["host"] == "kvm1" and created["vm"]["state"] == "running"
        port = created["vm"]["graphics"]["port"]
        assert port >= 5900 and created["vm"]["graphics"]["listen"] == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as console:
            assert console.recv(12).startswith(b"RFB ")  # a real VNC server, password-protected

        query = cluster.cli_json("virt", "query", vm)["kvm1"]["vm_info"][vm]
        assert query["graphics"]["type"] == "vnc" and query["graphics"]["port"] == port
        assert query["disks"]["vda"]["format"] == "qcow2"
        human = cluster.cli("virt", "query", vm).stdout
        assert f"vnc - kvm1:{port}" in human and "qcow2" in human

        assert cluster.cli("virt", "pause", vm).stdout.strip() == f"{vm} on kvm1: paused"
        assert cluster.cli("virt", "resume", vm).stdout.strip() == f"{vm} on kvm1: running"
        assert cluster.cli("virt", "stop", vm).stdout.strip() == f"{vm} on kvm1: shutoff"
        cluster.cli("virt", "purge", vm)
        wait_until(lambda: vm not in cluster.cli_json("virt", "list").get("kvm1", {}), what="the purge to show")
        assert not (image_dir / "vms" / vm).exists()
        recorder.close()
        seen = [t.rsplit("/", 1)[1] for t in recorder.tags() if f"/domain/{vm}/" in t]
        # QEMU reports a boot as started and resumed, in either order; the rest is ordered.
        assert seen[0] == "defined" and set(seen[1:3]) == {"started", "resumed"}, seen
        assert seen[3:5] == ["suspended", "resumed"] and seen[-2:] == ["stopped", "undefined"], seen
    finally:
        cluster.stop()
