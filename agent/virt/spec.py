"""VmSpec: what ``virt.init`` creates, validated before anything touches a path or libvirt."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from ..errors import InvalidSpec

# No path separators, no leading dot or dash, bounded: a VM name becomes a file name.
VmName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")]
ProfileName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")]
# An absolute path on the hypervisor, or master://relative/path served by the master.
ImageRef = Annotated[str, msgspec.Meta(max_length=1024)]


class VmSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A VM to create: name, size, image, profiles and options."""

    name: VmName
    cpus: Annotated[int, msgspec.Meta(ge=1, le=1024)]
    memory_mib: Annotated[int, msgspec.Meta(ge=16, le=16 * 1024 * 1024)]
    image: ImageRef | None = None
    nic_profile: ProfileName = "default"
    disk_profile: ProfileName = "default"
    enable_qcow: bool = False
    enable_vnc: bool = False
    seed: bool = False
    join_token: Annotated[str, msgspec.Meta(max_length=128)] = ""  # issued by the master for seed=True
    master_key: Annotated[str, msgspec.Meta(max_length=64)] = ""  # the master's public key, base64
    # The address the guest's own agent reaches the master at (the master chooses it: seed.master_address).
    master_address: Annotated[str, msgspec.Meta(max_length=255)] = ""
    start: bool = True

    def __post_init__(self) -> None:
        if self.image is not None and not (self.image.startswith("/") or self.image.startswith("master://")):
            raise ValueError(f"image {self.image!r} must be an absolute path or master://path")
        if self.enable_qcow and self.image is None:
            raise ValueError("enable_qcow needs an image to put the overlay on")
        if self.seed and not (self.join_token and self.master_key and self.master_address):
            raise ValueError("seed needs join_token, master_key and master_address "
                             "(saltmarsh virt init --seed provides them)")


def parse_spec(values: dict[str, Any]) -> VmSpec:
    """Build a VmSpec from a job's keyword arguments; InvalidSpec names the bad field."""
    try:
        return msgspec.convert(values, type=VmSpec)
    except msgspec.ValidationError as exc:
        raise InvalidSpec(f"invalid VM spec: {exc}") from exc


def validate_name(name: Any) -> str:
    """Return ``name`` if it is a valid VM name, else raise InvalidSpec."""
    try:
        return msgspec.convert(name, type=VmName)
    except msgspec.ValidationError as exc:
        raise InvalidSpec(f"invalid VM name {name!r}: letters, digits, . _ - (at most 64)") from exc
