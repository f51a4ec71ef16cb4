"""The recipe of a guest image: every setting that decides what ``image build`` makes, and its hash.

A recipe is what a build is reproduced from: ``NAME.recipe.json`` beside the image holds its
settings and their hash, and ``image build NAME --recipe FILE`` builds from them again. The
name is not part of the hash (two names for one recipe make the same image); the saltmarsh
source tree is (``source_sha256``), and so is ``BUILDER``, the version of the build steps
themselves: bump it whenever build.py, guest.py or disk.py change what an image contains.
What the hash cannot pin is the mirror's content: the package versions a build got are
listed in the recipe file too (``installed``), so two builds can be compared.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import BuildRefused

BUILDER = 2
# Each release the builder knows, with the Python it ships: the agent's wheels are built with the
# master host's /usr/bin/python3, so they only fit a guest with the same Python.
RELEASES: dict[str, str] = {"bookworm": "3.11", "trixie": "3.13"}
DEFAULT_RELEASE = "bookworm"
# The cloud kernel: a third of the generic one's modules, and it boots faster (fewer drivers probed);
# it lacks AHCI, which no longer matters since the seed CD-ROM is on virtio-scsi (see README, Images).
KERNELS: dict[str, str] = {"cloud": "linux-image-cloud-amd64", "generic": "linux-image-amd64"}
DEFAULT_KERNEL = "cloud"
# Empty: mmdebstrap's own default, the Debian mirror with a stable release's updates and security suites.
DEFAULT_MIRROR = ""
GiB = 1024**3
DEFAULT_SIZE = 4 * GiB
MIN_SIZE = 1 * GiB
MAX_SIZE = 2048 * GiB
MAX_PACKAGES = 200

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Debian policy 5.6.1: lower case letters, digits, + - . ; at least two characters, starting alphanumeric.
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{1,99}")
_MIRROR = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%/+-]*)?")
_SIZE = re.compile(r"([0-9]{1,13})([KMGT]?)(i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Recipe:
    """What an image is made of. Build one with ``Recipe.make`` (it checks every field)."""

    release: str
    size: int
    packages: tuple[str, ...]
    kernel: str
    mirror: str
    source_sha256: str
    builder: int = field(default=BUILDER)

    @classmethod
    def make(cls, *, release: str = DEFAULT_RELEASE, size: int = DEFAULT_SIZE, packages: tuple[str, ...] = (),
             kernel: str = DEFAULT_KERNEL, mirror: str = DEFAULT_MIRROR, source_sha256: str) -> Recipe:
        """A checked recipe; BuildRefused naming the first bad setting. Packages are sorted and deduplicated."""
        if release not in RELEASES:
            raise BuildRefused(f"unknown release {release!r} (known: {', '.join(sorted(RELEASES))})")
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise BuildRefused(f"size {size} is outside {MIN_SIZE // GiB} GiB to {MAX_SIZE // GiB} GiB")
        if kernel not in KERNELS:
            raise BuildRefused(f"unknown kernel {kernel!r} (known: {', '.join(sorted(KERNELS))})")
        if mirror and not _MIRROR.fullmatch(mirror):
            raise BuildRefused(f"mirror {mirror!r} is not an http:// or https:// URL")
        if not _SHA256.fullmatch(source_sha256):
            raise BuildRefused(f"source_sha256 {source_sha256!r} is not a sha256")
        return cls(release=release, size=size, packages=check_packages(packages), kernel=kernel,
                   mirror=mirror.rstrip("/"), source_sha256=source_sha256)

    def settings(self) -> dict[str, Any]:
        """The settings as plain JSON values (what the hash is taken of)."""
        data = asdict(self)
        data["packages"] = list(self.packages)
        return data

    @property
    def sha256(self) -> str:
        """The hash of the settings (canonical JSON: sorted keys, no spaces)."""
        canonical = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def kernel_package(self) -> str:
        """The Debian package of the kernel."""
        return KERNELS[self.kernel]

    @property
    def python(self) -> str:
        """The guest's Python version (major.minor)."""
        return RELEASES[self.release]

    def document(self, name: str, **extra: Any) -> dict[str, Any]:
        """What ``NAME.recipe.json`` holds: the name, the settings, their hash, and ``extra`` facts of the build."""
        return {"name": name, "recipe": self.settings(), "recipe_sha256": self.sha256, **extra}


def recipe_from_file(path: Path) -> Recipe:
    """The recipe in a ``NAME.recipe.json`` file; BuildRefused if it cannot be read or is not a recipe."""
    try:
        document = json.loads(path.read_text())
        settings = document["recipe"]
        recipe = Recipe.make(release=settings["release"], size=int(settings["size"]),
                             packages=tuple(settings["packages"]), kernel=settings["kernel"],
                             mirror=settings["mirror"], source_sha256=settings["source_sha256"])
        builder = int(settings["builder"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BuildRefused(f"{path}: not a recipe file ({type(exc).__name__}: {exc})") from exc
    if builder != BUILDER:
        raise BuildRefused(f"{path}: made by builder version {builder}, this saltmarsh builds version {BUILDER}")
    return recipe


def check_name(name: str) -> str:
    """``name`` if it is a safe image name (letters, digits, ``.``, ``_``, ``-``; at most 64), else BuildRefused."""
    if name.endswith(".qcow2"):
        raise BuildRefused(f"image name {name!r}: give it without .qcow2 (NAME makes NAME.qcow2)")
    if not _NAME.fullmatch(name) or ".." in name:
        raise BuildRefused(f"image name {name!r} is not a safe name: 1 to 64 letters, digits, '.', '_', '-', "
                           "starting with a letter or digit")
    return name


def check_packages(packages: tuple[str, ...]) -> tuple[str, ...]:
    """Debian package names, sorted and without duplicates; BuildRefused naming the first bad one."""
    if len(packages) > MAX_PACKAGES:
        raise BuildRefused(f"{len(packages)} extra packages: at most {MAX_PACKAGES}")
    for package in packages:
        if not _PACKAGE.fullmatch(package):
            raise BuildRefused(f"{package!r} is not a Debian package name")
    return tuple(sorted(set(packages)))


def parse_packages(text: str) -> tuple[str, ...]:
    """``a,b,c`` as package names (empty items ignored); BuildRefused on a bad name."""
    return check_packages(tuple(item.strip() for item in text.split(",") if item.strip()))


def parse_size(text: str) -> int:
    """A size such as ``4G``, ``4GiB``, ``4096M`` or ``4294967296`` in bytes (powers of 1024, as qemu-img counts)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise BuildRefused(f"size {text!r} is not a size such as 4G or 4096M")
    size = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise BuildRefused(f"size {text} is outside {MIN_SIZE // GiB}G to {MAX_SIZE // GiB}G")
    return size
