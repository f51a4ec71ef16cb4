"""What virt.init makes and reads, on libvirt's test:///default driver through a real master and agent:
VM disks and seed ISOs only root may read, VM directories QEMU may only traverse, and images only from
``virt.image_dirs``."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .cluster import Cluster


@pytest.fixture
def hv(cluster: Cluster, tmp_path: Path) -> Cluster:
    images = tmp_path / "images"
    images.mkdir()
    cluster.start_agents("hv1", virt={"vm_dir": str(tmp_path / "vms"), "image_dirs": [str(images)]})
    return cluster


def init(cluster: Cluster, *args: str, ok: bool = True) -> Any:
    result = cluster.cli("run", "hv1", "virt.init", "cpus=1", "memory_mib=128", *args, "--json", check=False)
    value = json.loads(result.stdout)["hv1"]
    assert (result.returncode == 0) == ok, value
    return value


def mode(path: Path | str) -> int:
    return stat.S_IMODE(Path(path).stat().st_mode)


def qcow2(path: Path, *backing: str) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(path), "64M"], check=True, timeout=30)
    return path


def test_disks_and_seed_isos_are_readable_by_root_alone(hv: Cluster, tmp_path: Path) -> None:
    base = qcow2(tmp_path / "images" / "base.qcow2")
    base_mode = mode(base)
    seeded = init(hv, "name=seeded", "seed=true", "join_token=a-secret-token", "master_key=bWFzdGVy",
                  "master_address=10.0.2.2")
    disks = seeded["disks"]
    iso = next(d["file"] for d in disks.values() if d["device"] == "cdrom")
    assert Path(iso).read_bytes().count(b"a-secret-token") >= 1
    overlay = init(hv, "name=overlaid", f"image={base}", "enable_qcow=true")["disks"]["vda"]["file"]
    copied = init(hv, "name=copied", f"image={base}")["disks"]["vda"]["file"]
    for path in (iso, disks["vda"]["file"], overlay, copied):
        assert mode(path) == 0o600, (path, oct(mode(path)))
    for vm in ("seeded", "overlaid", "copied"):
        # QEMU (another user) must reach its files through the directory, but nobody may list it.
        assert mode(tmp_path / "vms" / vm) == 0o711
    assert mode(base) == base_mode  # the base is left as it was


def test_images_outside_the_image_dirs_are_refused(hv: Cluster, tmp_path: Path) -> None:
    images = tmp_path / "images"
    outside = init(hv, "name=shadow", "image=/etc/shadow", ok=False)["error"]
    assert outside == {"type": "InvalidSpec", "message": (
        f"image /etc/shadow is outside the image directories this hypervisor allows (virt.image_dirs: {images})")}
    # Lexically inside, really outside: through a symlink, and through "..".
    (images / "innocent.qcow2").symlink_to("/etc/shadow")
    linked = init(hv, "name=linked", f"image={images / 'innocent.qcow2'}", ok=False)["error"]
    assert linked["type"] == "InvalidSpec"
    assert linked["message"].endswith("outside the image directories this hypervisor allows "
                                      f"(virt.image_dirs: {images}): it resolves to /etc/shadow")
    dotted = init(hv, "name=dotted", f"image={images}/../../../../etc/shadow", ok=False)["error"]
    assert dotted["type"] == "InvalidSpec" and "outside the image directories" in dotted["message"]
    # Inside, but naming a backing file outside: qemu-img would read that file for us.
    elsewhere = qcow2(tmp_path / "elsewhere.qcow2")
    chained = qcow2(images / "chained.qcow2", "-b", str(elsewhere), "-F", "qcow2")
    backed = init(hv, "name=chained", f"image={chained}", ok=False)["error"]
    assert backed == {"type": "InvalidSpec", "message": (
        f"image {chained} has a backing file ({elsewhere}); only self-contained images can be used")}
    nope = images / "nope.qcow2"
    missing = init(hv, "name=missing", f"image={nope}", ok=False)["error"]
    assert missing == {"type": "InvalidSpec", "message": f"image {nope} does not exist on this hypervisor"}
    # None of them left a VM or a file behind.
    listed = hv.cli_json("run", "hv1", "virt.list_domains")["hv1"]
    assert not {"shadow", "linked", "dotted", "chained", "missing"} & set(listed)
    assert not (tmp_path / "vms").exists()
    # A real image inside the image dir, and a symlink to it from inside, are accepted.
    good = qcow2(images / "good.qcow2")
    (images / "alias.qcow2").symlink_to(good)
    assert init(hv, "name=good", f"image={images / 'alias.qcow2'}", "enable_qcow=true")["state"] == "running"
