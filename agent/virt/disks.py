"""Disk files for new VMs: blank images, qcow2 overlays on a cached base, and full copies (qemu-img)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import FunctionError
from .profiles import DiskProfileEntry

QEMU_IMG_TIMEOUT = 3600


@dataclass(frozen=True)
class DiskPlan:
    """A disk of a new VM: where its file is, in which format, on which bus and device."""

    path: Path
    format: str
    bus: str
    target: str
    device: str = "disk"


def qemu_img(*args: str) -> str:
    """Run qemu-img; FunctionError with its message if it fails or is missing."""
    if shutil.which("qemu-img") is None:
        raise FunctionError("qemu-img is not installed on this hypervisor (Debian: qemu-utils)")
    result = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT)
    if result.returncode != 0:
        raise FunctionError(f"qemu-img {args[0]} failed: {result.stderr.strip()}")
    return result.stdout


def image_format(path: Path) -> str:
    """The format of an existing image (qcow2, raw, ...)."""
    return str(json.loads(qemu_img("info", "--output=json", str(path)))["format"])


def target_name(bus: str, index: int) -> str:
    """vda, vdb... on virtio; sda... on scsi/sata; hda... on ide."""
    prefix = {"virtio": "vd", "ide": "hd"}.get(bus, "sd")
    return prefix + "abcdefghijklmnopqrstuvwxyz"[index]


def create_disks(vm_dir: Path, vm: str, profile: tuple[DiskProfileEntry, ...], base: Path | None,
                 overlay: bool, created: list[Path]) -> list[DiskPlan]:
    """Create every disk of ``profile`` under ``vm_dir/vm``; the first one starts from ``base`` if given.

    Each file made is appended to ``created`` as soon as it exists, so that a
    failure later can remove exactly what this call made.
    """
    directory = vm_dir / vm
    directory.mkdir(parents=True, exist_ok=True)
    plans = []
    for index, disk in enumerate(profile):
        path = directory / f"{disk.name}.{disk.format}"
        if path.exists():
            raise FunctionError(f"disk {path} already exists; refusing to overwrite it")
        created.append(path)
        if index == 0 and base is not None:
            _from_base(base, path, disk.format, overlay)
        else:
            qemu_img("create", "-q", "-f", disk.format, str(path), f"{disk.size_mib}M")
        plans.append(DiskPlan(path, "qcow2" if (index == 0 and overlay) else disk.format, disk.bus,
                              target_name(disk.bus, index)))
    return plans


def _from_base(base: Path, path: Path, fmt: str, overlay: bool) -> None:
    base_format = image_format(base)
    if overlay:
        # The overlay records the base by absolute path; the base stays read-only in the cache.
        qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", base_format, str(path))
    else:
        qemu_img("convert", "-q", "-f", base_format, "-O", fmt, str(base), str(path))
