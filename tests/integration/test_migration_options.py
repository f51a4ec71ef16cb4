"""``virt migrate --copy-storage all|inc`` and ``--postcopy`` on real QEMU, and where the target's QEMU listens.

hva keeps its VMs' disks in a directory of its own under /var/lib/libvirt, which hv-b's namespace does not
share (only /var/lib/libvirt/images is shared), so a disk must really be copied. The VM's disk holds a few MiB
of random data and the bandwidth is capped at 1 MiB/s, so the copy lasts long enough to watch the target's
listening sockets and to switch to post-copy while memory is still moving.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..cluster import EventRecorder, wait_until
from ..realvirt import IMAGES_DIR
from ..twohosts import HV_A_ADDRESS, HV_B_ADDRESS, unprivileged_userfaultfd
from .conftest import RealVirt, SaltmarshOnTwoHosts, saltmarsh_on_two_hosts

pytestmark = pytest.mark.integration

DATA_MIB = 3
DISK_MIB = 8  # mirroring counts unallocated space against the bandwidth cap too


class QemuListeners(threading.Thread):
    """Records every TCP address a QEMU process listens on (``ss -ltnp``), until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.addresses: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, timeout=10, check=False).stdout
            self.addresses |= {line.split()[3] for line in out.splitlines() if "qemu-system" in line}

    def __enter__(self) -> QemuListeners:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(timeout=15)


@pytest.fixture(scope="module")
def env(real_libvirtd: RealVirt, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaltmarshOnTwoHosts]:
    """The two hosts, hva's VM disks in a directory hv-b does not see."""
    local = Path(tempfile.mkdtemp(prefix="saltmarsh-local-", dir="/var/lib/libvirt"))
    local.chmod(0o755)
    try:
        with saltmarsh_on_two_hosts(tmp_path_factory.mktemp("options"), vm_dirs={"hva": local / "vms"}) as env:
            yield env
    finally:
        shutil.rmtree(local, ignore_errors=True)


@pytest.fixture(scope="module")
def data_image() -> Iterator[Path]:
    """A qcow2 image with DATA_MIB MiB of random data (so that copying it takes a while at 1 MiB/s)."""
    directory = Path(tempfile.mkdtemp(prefix="saltmarsh-data-", dir=IMAGES_DIR))
    directory.chmod(0o755)
    raw = directory / "data.raw"
    with raw.open("wb") as f:
        f.write(os.urandom(DATA_MIB << 20))
        f.truncate(DISK_MIB << 20)
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(directory / "data.qcow2")], check=True,
                   timeout=60)
    raw.unlink()
    yield directory / "data.qcow2"
    shutil.rmtree(directory, ignore_errors=True)


def _migrate(env: SaltmarshOnTwoHosts, *args: str) -> Any:
    """``virt migrate ARGS --json`` with a CLI timeout longer than the migration's."""
    out = env.cluster.cli("virt", "migrate", *args, "--timeout", "180", "--json", timeout=240)
    return json.loads(out.stdout)


def _disk_of(env: SaltmarshOnTwoHosts, agent: str, vm: str) -> str:
    with env.hypervisor(agent).connection() as conn:
        xml = conn.lookupByName(vm).XMLDesc(0)
    return xml.split("<source file='", 1)[1].split("'", 1)[0]


def _on_hv_b(path: str, env: SaltmarshOnTwoHosts) -> Path:
    """Where a path as hv-b's namespace sees it under /var/lib/libvirt lives on the machine."""
    return env.two.b.scratch / "varlib" / Path(path).relative_to("/var/lib/libvirt")


def _identical(a: Path | str, b: Path | str) -> bool:
    # -U: the running QEMU holds a lock on its disk.
    proc = subprocess.run(["qemu-img", "compare", "-U", str(a), str(b)], capture_output=True, text=True, timeout=60,
                          check=False)
    return proc.returncode == 0


@pytest.mark.timeout(300)
def test_copy_storage_all_with_postcopy_listening_on_the_target_address_only(
        env: SaltmarshOnTwoHosts, data_image: Path, real_libvirtd: RealVirt) -> None:
    cluster = env.cluster
    vm = f"{real_libvirtd.prefix}copyall"
    cluster.cli_json("virt", "init", vm, "1", "128", str(data_image), "--host", "hva", "--timeout", "120")
    source_disk = _disk_of(env, "hva", vm)
    assert not source_disk.startswith(str(IMAGES_DIR)) and not _on_hv_b(source_disk, env).exists()
    # Recording must outlast the quiet spells of a slow migration (the disk copy at 1 MiB/s, a loaded CI
    # host): once 15 s passed without an event, the postcopy event came to nobody.
    recorder = EventRecorder(cluster, "saltmarsh/virt/", idle_timeout=45)
    recorder.ready("hvb", f"saltmarsh/virt/hvb/domain/{vm}/probe")

    with unprivileged_userfaultfd(), QemuListeners() as listeners:
        moved = _migrate(env, vm, "hvb", "--copy-storage", "all", "--postcopy", "--bandwidth", "1")
    result = moved["result"]
    assert set(moved["confirmed"]) == {"source", "target"}
    assert result["copy_storage"] == "all" and result["listen_address"] == HV_B_ADDRESS

    # The disk was copied into hv-b's own /var/lib/libvirt, block for block.
    copied = _on_hv_b(source_disk, env)
    assert copied.exists() and _identical(source_disk, copied)
    # The target's QEMU (migration stream and NBD server) listened on hv-b's address and nowhere else.
    assert listeners.addresses, "no QEMU listening socket seen during the migration"
    assert {a.rsplit(":", 1)[0] for a in listeners.addresses} == {HV_B_ADDRESS}, listeners.addresses
    # Post-copy: the agent switched, and the source's libvirt says QEMU paused the VM there for post-copy
    # (libvirt 9.0 reports the target's resume as "migrated" either way).
    assert result["postcopy"] is True
    def suspended_for_postcopy() -> bool:
        return any(e.tag == f"saltmarsh/virt/hva/domain/{vm}/suspended" and e.data.get("detail") == "postcopy"
                   for e in recorder.events)
    try:
        wait_until(suspended_for_postcopy, what="the source's suspended/postcopy event")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; recording {'on' if recorder.recording() else 'ended'}, hva's events: "
                             f"{[t for t in recorder.tags() if '/hva/' in t][-20:]}") from exc
    recorder.close()
    wait_until(lambda: cluster.cli_json("virt", "list").get("hvb", {}).get(vm) == "running",
               what="the inventory to name hvb")
    with env.two.b.connection() as conn:
        assert conn.lookupByName(vm).isActive()


@pytest.mark.timeout(300)
def test_copy_storage_inc_moves_the_overlay_both_ways(env: SaltmarshOnTwoHosts, data_image: Path,
                                                      real_libvirtd: RealVirt) -> None:
    cluster = env.cluster
    vm = f"{real_libvirtd.prefix}copyinc"
    cluster.cli_json("virt", "init", vm, "1", "128", str(data_image), "--enable-qcow", "--host", "hva",
                     "--timeout", "120")
    overlay = _disk_of(env, "hva", vm)
    base = _backing_of(overlay)
    assert base, "--enable-qcow made no overlay"
    with QemuListeners() as listeners:
        there = _migrate(env, vm, "hvb", "--copy-storage", "inc", "--bandwidth", "1")
    assert there["result"]["copy_storage"] == "inc" and there["result"]["listen_address"] == HV_B_ADDRESS
    copied = _on_hv_b(overlay, env)
    # Only the overlay moved: hv-b's copy sits on the same base and reads the same.
    assert _backing_of(copied) == base and _identical(overlay, copied)
    assert {a.rsplit(":", 1)[0] for a in listeners.addresses} == {HV_B_ADDRESS}, listeners.addresses

    os.unlink(overlay)  # coming back must create and fill it again
    with QemuListeners() as listeners:
        back = _migrate(env, vm, "hva", "--copy-storage", "inc", "--bandwidth", "1")
    assert back["source"] == "hvb" and set(back["confirmed"]) == {"source", "target"}
    assert back["result"]["listen_address"] == HV_A_ADDRESS
    assert _backing_of(overlay) == base and _identical(overlay, copied)
    assert {a.rsplit(":", 1)[0] for a in listeners.addresses} == {HV_A_ADDRESS}, listeners.addresses
    with env.two.a.connection() as conn:
        assert conn.lookupByName(vm).isActive()


def _backing_of(path: Path | str) -> str:
    info = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    return str(json.loads(info).get("backing-filename", ""))
