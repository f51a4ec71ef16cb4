"""NIC and disk profiles (agent config ``virt:``), as in Salt's virt profiles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec

DeviceName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")]


class NicProfileEntry(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One NIC: a bridge, a libvirt network (e.g. NAT ``default``), or QEMU user networking (``source`` unused)."""

    name: DeviceName = "eth0"
    type: Literal["bridge", "network", "user"] = "bridge"
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "br0"
    model: Literal["virtio", "e1000", "rtl8139"] = "virtio"


class DiskProfileEntry(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One disk: its size when created blank, format and bus."""

    name: DeviceName = "system"
    size_mib: Annotated[int, msgspec.Meta(ge=1, le=64 * 1024 * 1024)] = 8192
    format: Literal["qcow2", "raw"] = "qcow2"
    bus: Literal["virtio", "scsi", "sata", "ide"] = "virtio"


DEFAULT_NIC_PROFILES = {"default": (NicProfileEntry(),)}
DEFAULT_DISK_PROFILES = {"default": (DiskProfileEntry(),)}


class VirtFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The ``virt:`` section of agent.yaml."""

    domain_type: Literal["auto", "kvm", "qemu", "test"] = "auto"
    vm_dir: str = "/var/lib/libvirt/images/saltmarsh"
    images_dir: str = ""  # empty: <root_dir>/images
    # Where absolute image paths given to virt.init may lie (after symlinks); absent: images_dir only.
    image_dirs: list[Annotated[str, msgspec.Meta(min_length=1)]] | None = None
    vnc_listen: str = "127.0.0.1"
    # Merged over the defaults, so "default" exists unless overridden.
    nic_profiles: dict[str, tuple[NicProfileEntry, ...]] = {}
    disk_profiles: dict[str, tuple[DiskProfileEntry, ...]] = {}


@dataclass(frozen=True)
class VirtConfig:
    """Validated ``virt:`` settings with paths resolved."""

    domain_type: str
    vm_dir: Path
    images_dir: Path
    vnc_listen: str
    nic_profiles: dict[str, tuple[NicProfileEntry, ...]]
    disk_profiles: dict[str, tuple[DiskProfileEntry, ...]]
    image_dirs: tuple[Path, ...]

    @classmethod
    def from_file(cls, raw: VirtFile, resolve: Callable[[str], Path], root_dir: Path) -> VirtConfig:
        """Resolve the paths of a parsed ``virt:`` section (relative to the config dir)."""
        images = resolve(raw.images_dir) if raw.images_dir else root_dir / "images"
        image_dirs = (images,) if raw.image_dirs is None else tuple(resolve(d) for d in raw.image_dirs)
        return cls(raw.domain_type, resolve(raw.vm_dir), images, raw.vnc_listen,
                   {**DEFAULT_NIC_PROFILES, **raw.nic_profiles}, {**DEFAULT_DISK_PROFILES, **raw.disk_profiles},
                   image_dirs)
