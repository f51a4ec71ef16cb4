"""A seeded VM whose disk does not boot, on the real libvirtd: virt init says so, with the real console.

The serial console goes through the real virtlogd into ``<vm_dir>/<name>/console.log``, and
the firmware (SeaBIOS, under TCG: this machine's KVM cannot run guest code) writes its boot
attempts there, so ``virt init --seed`` ends with "has not joined" and the firmware's own words.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from ..cluster import Cluster, wait_until
from .conftest import RealVirt

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_a_blank_disk_never_joins_and_the_console_says_why(real_libvirtd: RealVirt, image_dir: Path,
                                                           tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster")
    cluster.start_master()
    try:
        vm = f"{real_libvirtd.prefix}blank"
        cluster.start_agents("kvm1", libvirt_uri=real_libvirtd.uri,
                             virt={"vm_dir": str(image_dir / "vms"), "images_dir": str(image_dir / "cache"),
                                   "domain_type": "qemu", "nic_profiles": {"lab": [{"type": "user"}]}})
        wait_until(lambda: cluster.cli_json("virt", "host-info").get("kvm1", {}).get("libvirt"),
                   what="the real hypervisor in the inventory")
        result = cluster.cli("virt", "init", vm, "1", "128", "--seed", "--master-address", "10.0.2.2",
                             "--nic-profile", "lab", "--join-timeout", "25", "--timeout", "120", check=False)
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.splitlines()
        assert re.match(rf"saltmarsh: {vm}: the VM runs but its agent has not joined after 2[5-9] s", lines[0]), lines
        console = "\n".join(lines[1:])
        assert "Booting from Hard Disk" in console or "No bootable device" in console, result.stderr
        # The same from the command that shows it on demand, and the file is the VM directory's.
        shown = cluster.cli("virt", "console-log", vm, "--lines", "200").stdout
        assert str(image_dir / "vms" / vm / "console.log") in shown.splitlines()[0]
        assert "Booting from Hard Disk" in shown or "No bootable device" in shown
        log = image_dir / "vms" / vm / "console.log"
        assert not log.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO), oct(log.stat().st_mode)
        cluster.cli("virt", "purge", vm)
        assert not log.exists()
    finally:
        cluster.stop()
