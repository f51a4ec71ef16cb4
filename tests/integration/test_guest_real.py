"""A real Debian guest, built by ``saltmarsh image build``, booted seeded on the real libvirtd, joins by itself.

The image is built once per test session (conftest.py's ``guest_image``, see guest_image.py).
The guest boots under TCG (``virt.domain_type: qemu``: this machine's KVM cannot run a guest
kernel) with a ``user`` NIC, through which it reaches the host's loopback at 10.0.2.2, where the
test's master listens: no traffic leaves the machine. Asserted: ``virt init --seed`` reports the join, the guest's own
agent answers ``test.ping``, ``host.info`` inside it reports its own kernel and OS, and the
inventory links the VM on its hypervisor to the agent inside it.
"""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path

import pytest

from ..cluster import Cluster, wait_until
from .conftest import RealVirt
from .guest_image import IMAGE

pytestmark = pytest.mark.integration

@pytest.mark.timeout(1500)
def test_a_seeded_guest_boots_joins_and_answers(real_libvirtd: RealVirt, image_dir: Path, guest_image: Path,
                                                tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster", file_roots=[str(guest_image)])
    cluster.start_master()
    vm = f"{real_libvirtd.prefix}g1"
    try:
        cluster.start_agents("kvm1", libvirt_uri=real_libvirtd.uri,
                             virt={"vm_dir": str(image_dir / "vms"), "images_dir": str(image_dir / "cache"),
                                   "domain_type": "qemu", "nic_profiles": {"lab": [{"type": "user"}]}})
        wait_until(lambda: cluster.cli_json("virt", "host-info").get("kvm1", {}).get("libvirt"),
                   what="the real hypervisor in the inventory")
        started = time.monotonic()
        init = cluster.cli("virt", "init", vm, "2", "768", f"master://{IMAGE}.qcow2", "--enable-qcow", "--seed",
                           "--master-address", "10.0.2.2", "--nic-profile", "lab", "--join-timeout", "600",
                           "--timeout", "300", check=False, timeout=1000)
        joined_after = time.monotonic() - started
        assert init.returncode == 0, init.stdout + init.stderr + _console(cluster, vm)
        assert re.search(rf"^{vm}: its agent joined [0-9.]+ s after the VM was created$", init.stdout, re.M)
        print(f"virt init -> guest agent joined: {joined_after:.0f} s (TCG)")

        assert cluster.cli_json("run", vm, "test.ping") == {vm: True}
        inside = cluster.cli_json("run", vm, "host.info")[vm]
        assert inside["id"] == vm and inside["hostname"] == vm  # cloud-init set the host name from the seed
        assert "Debian GNU/Linux 12" in inside["os"] and inside["cpus"] == 2
        assert inside["kernel"] != platform.release() or inside["memory_mib"] < 1024  # its own kernel
        query = cluster.cli_json("virt", "query", vm)
        assert list(query) == ["kvm1"] and query["kvm1"]["vm_info"][vm]["agent"] == {"id": vm, "up": True}
        assert vm not in cluster.cli_json("virt", "host-info")  # a guest, not a hypervisor
        cluster.cli("virt", "purge", vm, "--timeout", "120")
    finally:
        cluster.stop()


def _console(cluster: Cluster, vm: str) -> str:
    shown = cluster.cli("virt", "console-log", vm, "--lines", "80", check=False)
    return f"\n--- console ---\n{shown.stdout}{shown.stderr}"
