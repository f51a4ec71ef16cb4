"""``saltmarsh image build`` for real: mmdebstrap from the Debian mirror, the agent's wheels, a disk that boots.

The image is checked without booting it (tests of seeded guests boot it): a qcow2 whose
sha256 file matches it, the MBR with SYSLINUX's code and two partitions, SYSLINUX and the
kernel on the FAT /boot with the kernel command line virt init's domains need, and in the
ext4 root (read with debugfs, nothing mounted) the agent's venv, its unit kept disabled by a
preset, the user, cloud-init's NoCloud-only config, DHCP on every NIC, and the drivers the
seed CD-ROM needs (virtio-scsi, sr_mod, isofs). The build itself proved the agent's venv
runs on the guest's Python (``chroot ROOTFS saltmarsh-agent --help``; its usage is in the log).
A second build on the same cache reuses the Debian base and is much faster.

The cache (.debs, the Debian base, the build venv) lives in /var/cache/saltmarsh-images/cache,
so that later runs on the same machine reuse it; the images go to the test's own directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..cluster import BIN

pytestmark = pytest.mark.integration

CACHE = Path("/var/cache/saltmarsh-images/cache")
TOOLS = ("mmdebstrap", "mkfs.ext4", "mkfs.vfat", "mcopy", "syslinux", "sfdisk", "qemu-img", "debugfs", "zstd")
MBR_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")


def saltmarsh(conf: Path, *words: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "saltmarsh"), "-c", str(conf), *words], capture_output=True, text=True,
                          timeout=timeout, check=False)


def debugfs(raw: Path, offset: int, *commands: str) -> str:
    script = raw.with_name("debugfs.cmd")
    script.write_text("\n".join(commands) + "\n")
    return subprocess.run(["debugfs", "-f", str(script), f"{raw}?offset={offset}"], capture_output=True, text=True,
                          check=True, timeout=60).stdout


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("image build needs root")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"scripts/setup.sh installs these: {missing}"
    (tmp_path / "images").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "master.yaml").write_text(yaml.safe_dump({
        "root_dir": str(tmp_path / "state"), "file_roots": [str(tmp_path / "images")]}))
    return tmp_path / "conf"


def build(conf: Path, name: str, *extra: str) -> tuple[dict[str, Any], list[str]]:
    result = saltmarsh(conf, "image", "build", name, "--size", "2G", "--cache-dir", str(CACHE), "--json", *extra,
                       timeout=840)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    print("\n".join(lines))
    return json.loads(result.stdout), lines


@pytest.mark.timeout(900)
def test_a_built_image_holds_a_bootable_disk_and_the_agent(conf: Path, tmp_path: Path) -> None:
    summary, lines = build(conf, "itest")
    assert [line.split()[2] for line in lines[1:]] == ["source", "wheels", "base", "rootfs", "disk", "qcow2",
                                                       "publish"]
    image = tmp_path / "images" / "itest.qcow2"
    assert summary["path"] == str(image) and summary["virtual_size"] == 2 << 30
    assert sorted(p.name for p in image.parent.iterdir()) == ["itest.qcow2", "itest.qcow2.sha256",
                                                               "itest.recipe.json"]
    sha256 = hashlib.sha256(image.read_bytes()).hexdigest()
    assert (image.parent / "itest.qcow2.sha256").read_text() == f"{sha256}  itest.qcow2\n" == \
        f"{summary['sha256']}  itest.qcow2\n"
    recipe = json.loads((image.parent / "itest.recipe.json").read_text())
    assert recipe["recipe_sha256"] == summary["recipe_sha256"] and recipe["recipe"]["release"] == "bookworm"
    installed = {line.split("=")[0] for line in recipe["installed"]}
    assert {"systemd", "cloud-init", "python3", "linux-image-cloud-amd64", "systemd-resolved"} <= installed
    assert "usage: saltmarsh-agent" in (CACHE / "itest.build.log").read_text(), "the venv ran in the chroot"

    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)], capture_output=True,
                                     text=True, check=True, timeout=60).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == 2 << 30
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True, timeout=300)
    check_boot(raw)
    check_root(raw)

    listed = json.loads(saltmarsh(conf, "image", "list", "--json", timeout=120).stdout)
    assert [(e["path"], e["format"], e["sha256"], e["sha256_from"]) for e in listed] == [
        ("itest.qcow2", "qcow2", sha256, "file")]

    # Again, on the same cache: the Debian base comes from it.
    again, lines = build(conf, "itest2")
    assert "cached base-bookworm-" in lines[3], lines
    settings = [json.loads((image.parent / f"{name}.recipe.json").read_text())["recipe"]
                for name in ("itest", "itest2")]
    for recipe_settings in settings:
        recipe_settings.pop("source_sha256")  # the tree may have changed in between (a working tree)
    assert settings[0] == settings[1]
    print(f"from the cache: {again['seconds']} s (first: {summary['seconds']} s), {again['size'] >> 20} MiB")


def partitions(raw: Path) -> list[dict[str, Any]]:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True, check=True,
                                      timeout=30).stdout)["partitiontable"]
    assert table["label"] == "dos"
    parts: list[dict[str, Any]] = table["partitions"]
    return parts


def check_boot(raw: Path) -> None:
    with raw.open("rb") as handle:
        mbr = handle.read(512)
    assert mbr[:440].rstrip(b"\0") == MBR_CODE.read_bytes()[:440].rstrip(b"\0") and mbr[510:] == b"\x55\xaa"
    boot, root = partitions(raw)
    assert boot["type"] == "6" and boot.get("bootable") and root["type"] == "83"
    with raw.open("rb") as handle:
        handle.seek(boot["start"] * 512 + 3)
        assert handle.read(8) == b"SYSLINUX"
    at = f"{raw}@@{boot['start'] * 512}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    listing = subprocess.run(["mdir", "-a", "-b", "-i", at, "::/"], capture_output=True, text=True, check=True,
                             timeout=30, env=env).stdout.lower()
    for name in ("ldlinux.sys", "ldlinux.c32", "syslinux.cfg", "vmlinuz", "initrd.img"):
        assert name in listing, listing
    config = subprocess.run(["mtype", "-i", at, "::/syslinux.cfg"], capture_output=True, text=True, check=True,
                            timeout=30, env=env).stdout
    assert re.search(r"APPEND root=LABEL=saltmarsh-root rw console=ttyS0,115200n8", config), config


def check_root(raw: Path) -> None:
    root = partitions(raw)[1]
    offset = root["start"] * 512
    out = debugfs(raw, offset,
                  "stat /opt/saltmarsh/venv/bin/saltmarsh-agent",
                  "cat /usr/lib/systemd/system/saltmarsh-agent.service",
                  "cat /usr/lib/systemd/system/saltmarsh-agent.service.d/guest.conf",
                  "cat /usr/lib/systemd/system-preset/80-saltmarsh.preset",
                  "ls -p /etc/systemd/system/multi-user.target.wants",
                  "cat /etc/passwd", "cat /etc/group",
                  "cat /etc/cloud/cloud.cfg.d/90-saltmarsh.cfg",
                  "cat /etc/systemd/network/80-saltmarsh-dhcp.network",
                  "cat /etc/fstab", "cat /etc/machine-id",
                  "ls -p /usr/lib/modules")
    assert "Type: regular" in out and "ExecStart=/opt/saltmarsh/venv/bin/saltmarsh-agent" in out
    assert "SupplementaryGroups=\n" in out and "disable saltmarsh-agent.service" in out
    assert "saltmarsh-agent.service" not in out.split("multi-user.target.wants")[1].split("root:x:0:0")[0]
    assert re.search(r"^saltmarsh:x:\d+:(\d+)::/var/lib/saltmarsh:/usr/sbin/nologin$", out, re.M)
    assert re.search(r"^saltmarsh:x:\d+:$", out, re.M), "its own group, and no one in it"
    assert "datasource_list: [NoCloud, None]" in out and "network: {config: disabled}" in out
    assert "Name=en* eth*" in out and "DHCP=yes" in out and "LABEL=saltmarsh-root / ext4" in out
    version = re.search(r"/(\d[^/]*-cloud-amd64)/", out)
    assert version, out
    modules = f"/usr/lib/modules/{version.group(1)}/kernel"
    drivers = debugfs(raw, offset, f"ls -p {modules}/drivers/scsi", f"ls -p {modules}/fs/isofs")
    for module in ("virtio_scsi.ko", "sr_mod.ko", "isofs.ko"):
        assert f"/{module}/" in drivers, f"the seed CD-ROM needs {module}"
