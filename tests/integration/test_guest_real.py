"""A real Debian guest, built by ``saltmarsh image build``, booted seeded on the real libvirtd, joins by itself.

The image is built once per test session (the Debian base is cached under IMAGE_CACHE for a
week, so a rebuild costs about a minute; from nothing about five). The guest boots under TCG
(``virt.domain_type: qemu``: this machine's KVM cannot run a guest kernel) with a ``user`` NIC,
through which it reaches the host's loopback at 10.0.2.2, where the test's master listens: no
traffic leaves the machine. Asserted: ``virt init --seed`` reports the join, the guest's own
agent answers ``test.ping``, ``host.info`` inside it reports its own kernel and OS, and the
inventory links the VM on its hypervisor to the agent inside it.
"""

from __future__ import annotations

import platform
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ..cluster import BIN, Cluster, wait_until
from .conftest import RealVirt

pytestmark = pytest.mark.integration

IMAGE_CACHE = Path("/var/cache/saltmarsh-images/tests")
IMAGE = "debian-12"
BUILD_TIMEOUT = 1200.0


@pytest.fixture(scope="session")
def guest_image() -> Iterator[Path]:
    """A file root holding a freshly built ``debian-12.qcow2`` (built from this tree)."""
    config_dir = IMAGE_CACHE / "master"
    roots = IMAGE_CACHE / "roots"
    for directory in (config_dir, roots):
        directory.mkdir(parents=True, exist_ok=True)
    (config_dir / "master.yaml").write_text(yaml.safe_dump({
        "root_dir": str(IMAGE_CACHE / "state"), "file_roots": [str(roots)], "interface": "127.0.0.1"}))
    started = time.monotonic()
    # The Debian base is shared with test_image_build through one cache (a lock keeps builds apart).
    build = subprocess.run([str(BIN / "saltmarsh"), "-c", str(config_dir), "image", "build", IMAGE, "--force",
                            "--cache-dir", str(IMAGE_CACHE.parent / "cache")],
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    print(f"image build: {time.monotonic() - started:.0f} s\n{build.stdout}")
    yield roots


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
