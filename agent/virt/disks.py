"""Disk files for new VMs: blank images, qcow2 overlays on a cached base, and full copies (qemu-img).

Modes. A VM's disks and its seed ISO (which carries a join token) are made
0600, owned by the agent's user (root, or the unit's ``saltmarsh``): no
other local user may read them. QEMU runs as yet another user
(libvirt-qemu) and still needs no group or other bit: with libvirt's
``dynamic_ownership`` (qemu.conf; on by default, as on Debian) libvirtd's
DAC security driver chowns every disk, cdrom and backing file of a VM to
the QEMU user when the VM starts and, with ``remember_owner`` (also the
default), gives them back when it stops. 0640 with the qemu group would
only widen that, and would need that group's name in our config. A host
with dynamic_ownership off must run QEMU as a user that can read them.
What QEMU does need is to traverse the directories above its files, which
no chown gives it, so the VM's directory is 0711: enterable, not listable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from saltmarsh.protocol.statedir import make_dirs

from ..errors import FunctionError, InvalidSpec
from .profiles import DiskProfileEntry

QEMU_IMG_TIMEOUT = 3600
VM_FILE_MODE = 0o600
VM_DIR_MODE = 0o711


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


def create_private_file(path: Path) -> int:
    """Create ``path`` exclusively with mode 0600 and return its descriptor; FunctionError if it exists.

    Made before qemu-img or pycdlib writes into it, so the file never exists with a wider mode
    (qemu-img and pycdlib create theirs 0644 less the umask, and a test or a caller may run us with any umask).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, VM_FILE_MODE)
    except FileExistsError as exc:
        raise FunctionError(f"{path} already exists; refusing to overwrite it") from exc
    os.fchmod(fd, VM_FILE_MODE)  # the mode given to open is masked by the umask
    return fd


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
    base_format = base_image_format(base) if base is not None else ""
    make_dirs(directory, VM_DIR_MODE)
    plans = []
    for index, disk in enumerate(profile):
        path = directory / f"{disk.name}.{disk.format}"
        os.close(create_private_file(path))
        created.append(path)
        if index == 0 and base is not None:
            _from_base(base, base_format, path, disk.format, overlay)
        else:
            qemu_img("create", "-q", "-f", disk.format, str(path), f"{disk.size_mib}M")
        os.chmod(path, VM_FILE_MODE)  # in case qemu-img replaced the file rather than writing into it
        plans.append(DiskPlan(path, "qcow2" if (index == 0 and overlay) else disk.format, disk.bus,
                              target_name(disk.bus, index)))
    return plans


def base_image_format(base: Path) -> str:
    """The format of a base image; InvalidSpec if it names a backing file of its own.

    qemu-img and QEMU would read that file too, wherever it is (a qcow2 header
    naming /etc/shadow is all it takes), past virt.image_dirs.
    """
    info = json.loads(qemu_img("info", "--output=json", str(base)))
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if backing:
        raise InvalidSpec(f"image {base} has a backing file ({backing}); only self-contained images can be used")
    return str(info["format"])


def _from_base(base: Path, base_format: str, path: Path, fmt: str, overlay: bool) -> None:
    if overlay:
        # The overlay records the base by absolute path; the base stays read-only in the cache.
        qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", base_format, str(path))
    else:
        qemu_img("convert", "-q", "-f", base_format, "-O", fmt, str(base), str(path))
