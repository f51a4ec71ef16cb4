"""The bootable disk, assembled from plain files: no loop device, no mount.

Layout (MBR, 512-byte sectors)::

    sector 0          SYSLINUX's MBR code (mbr.bin) and the partition table (sfdisk)
    1 MiB             partition 1, FAT16, bootable: SYSLINUX, syslinux.cfg, vmlinuz, initrd.img
    1 MiB + boot      partition 2, ext4 labelled saltmarsh-root: the root filesystem, to the disk's end

Each filesystem is written straight into the disk file at its partition's offset:
``mkfs.ext4 -d ROOTFS -E offset=`` fills the root from the directory tree,
``mkfs.vfat --offset`` makes /boot, ``mcopy -i disk@@offset`` copies files into it and
``syslinux --install --offset`` writes its boot sector and ldlinux.sys. The MBR code is
written by hand (440 bytes), which keeps the table sfdisk wrote. The kernel finds its root
by label (``root=LABEL=saltmarsh-root``), so the disk boots as ``vda`` or anything else.
Identifiers (the disk's, the filesystems' UUIDs) come from the recipe's hash, so two
builds of one recipe give the same ones.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import BuildFailed
from .guest import BOOT_LABEL, KERNEL_COMMAND_LINE, ROOT_LABEL
from .process import run

SECTOR = 512
MiB = 1024 * 1024
BOOT_START = 1 * MiB
MIN_BOOT = 64 * MiB
MBR_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")
MBR_CODE_BYTES = 440
# ext4 needs room beyond the files: its metadata, the journal, and what the guest writes at first boot.
ROOT_HEADROOM = 1.25
TOOL_TIMEOUT = 900.0

SYSLINUX_CFG = f"""\
SERIAL 0 115200
DEFAULT saltmarsh
PROMPT 0
TIMEOUT 0
LABEL saltmarsh
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND {KERNEL_COMMAND_LINE}
"""


@dataclass(frozen=True)
class Kernel:
    """The guest's kernel and initramfs, as found in its /boot."""

    version: str
    vmlinuz: Path
    initrd: Path


@dataclass(frozen=True)
class Layout:
    """Where the partitions lie, in bytes."""

    size: int
    boot_size: int

    @property
    def root_start(self) -> int:
        """The root partition's first byte."""
        return BOOT_START + self.boot_size

    @property
    def root_size(self) -> int:
        """The root partition's length (to the end of the disk, in whole MiB)."""
        return (self.size - self.root_start) // MiB * MiB


def find_kernel(rootfs: Path) -> Kernel:
    """The newest kernel in ``rootfs/boot`` that has its initramfs; BuildFailed if there is none."""
    candidates = []
    for vmlinuz in (rootfs / "boot").glob("vmlinuz-*"):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        initrd = rootfs / "boot" / f"initrd.img-{version}"
        if initrd.is_file():
            candidates.append(Kernel(version, vmlinuz, initrd))
    if not candidates:
        raise BuildFailed(f"no kernel with an initramfs in {rootfs / 'boot'}")
    return max(candidates, key=lambda k: [int(p) if p.isdigit() else 0 for p in k.version.replace("-", ".").split(".")])


def tree_bytes(root: Path) -> int:
    """The bytes the files under ``root`` occupy (4 KiB blocks, as ext4 stores them; links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _dirs, names in os.walk(root):
        total += 4096
        for name in names:
            info = os.lstat(os.path.join(directory, name))
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += (info.st_size + 4095) // 4096 * 4096
    return total


def plan(size: int, kernel: Kernel, rootfs: Path) -> Layout:
    """The partitions of a ``size``-byte disk; BuildFailed when the tree does not fit."""
    needed_boot = int((kernel.vmlinuz.stat().st_size + kernel.initrd.stat().st_size) * 1.2) + 4 * MiB
    boot = max(MIN_BOOT, (needed_boot + MiB - 1) // MiB * MiB)
    layout = Layout(size=size, boot_size=boot)
    needed_root = int(tree_bytes(rootfs) * ROOT_HEADROOM)
    if layout.root_size < needed_root:
        raise BuildFailed(f"the root filesystem needs about {needed_root // MiB} MiB but a {size // MiB} MiB disk "
                          f"leaves {layout.root_size // MiB} MiB: use a larger --size")
    return layout


def assemble(disk: Path, layout: Layout, rootfs: Path, kernel: Kernel, recipe_sha256: str, log: IO[str]) -> None:
    """Write the whole bootable disk into the new sparse file ``disk``."""
    with disk.open("xb") as handle:
        handle.truncate(layout.size)
    ids = uuid.UUID(recipe_sha256[:32])
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-U", str(ids), "-m", "1",
         "-E", f"offset={layout.root_start},hash_seed={ids}", "-d", str(rootfs),
         str(disk), f"{layout.root_size // 1024}k"], timeout=TOOL_TIMEOUT, log=log, env=env)
    _partition(disk, layout, recipe_sha256[:8], log)
    _boot_filesystem(disk, layout, kernel, recipe_sha256[8:16], log, env)
    with disk.open("r+b") as handle:
        handle.write(MBR_CODE.read_bytes()[:MBR_CODE_BYTES])


def _partition(disk: Path, layout: Layout, disk_id: str, log: IO[str]) -> None:
    script = (f"label: dos\nlabel-id: 0x{disk_id}\nunit: sectors\n\n"
              f"start={BOOT_START // SECTOR}, size={layout.boot_size // SECTOR}, type=6, bootable\n"
              f"start={layout.root_start // SECTOR}, size={layout.root_size // SECTOR}, type=83\n")
    script_file = disk.with_name("partitions.sfdisk")
    script_file.write_text(script)
    run(["sfdisk", "--quiet", "--wipe", "never", "--no-reread", "--no-tell-kernel", str(disk)],
        timeout=60, log=log, stdin=script_file)


def _boot_filesystem(disk: Path, layout: Layout, kernel: Kernel, volume_id: str, log: IO[str],
                     env: dict[str, str]) -> None:
    start_sector = BOOT_START // SECTOR
    run(["mkfs.vfat", "-F", "16", "-n", BOOT_LABEL, "-i", volume_id, "-h", str(start_sector),
         f"--offset={start_sector}", str(disk), str(layout.boot_size // 1024)], timeout=120, log=log)
    config = disk.with_name("syslinux.cfg")
    config.write_text(SYSLINUX_CFG)
    image = f"{disk}@@{BOOT_START}"
    for source, name in ((kernel.vmlinuz, "vmlinuz"), (kernel.initrd, "initrd.img"), (config, "syslinux.cfg")):
        run(["mcopy", "-i", image, str(source), f"::/{name}"], timeout=300, log=log, env=env)
    run(["syslinux", "--install", "--offset", str(BOOT_START), str(disk)], timeout=120, log=log, env=env)
