"""``saltmarsh image list``: every image file under the file roots, and what the master served of it.

For each ``.qcow2``, ``.raw``, ``.img`` and ``.iso`` under each file root (hidden files and
folders skipped, as are symlinks that lead outside their root, which the master would
refuse to serve): its size, what ``qemu-img info`` says (format, virtual size), its sha256
(from ``FILE.sha256`` when that is at least as new as the file, else computed), and the
agents the master sent it to, from the fileserver's records (``<root_dir>/images-served.json``):
``fetched`` agents were sent every chunk (they cache the file under its sha256 in their
``virt.images_dir``; whether they still hold it, the master cannot know), ``asked`` agents
were sent only the manifest (an agent that had it cached already, or a fetch that failed).
A file in a later root with the same relative path as one in an earlier root is never
served (the first root wins): it is listed with ``served: false``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from saltmarsh.master.cloud.fileserver import read_served_records

from .build import file_sha256, qemu_info
from .errors import ImageError

IMAGE_SUFFIXES = (".qcow2", ".raw", ".img", ".iso")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ImageEntry:
    """One image file and what is known of it."""

    path: str
    root: str
    size: int
    format: str
    virtual_size: int | None
    sha256: str
    sha256_from: str
    served: bool
    fetched_by: list[str] = field(default_factory=list)
    asked_by: list[str] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        """The entry as JSON values (``image list --json``)."""
        return asdict(self)


def catalog(file_roots: list[Path], records: Path) -> list[ImageEntry]:
    """Every image under ``file_roots``, in root order then path order.

    ImageError if the fileserver's records cannot be read (they lie in the master's private root_dir).
    """
    try:
        served_to = read_served_records(records)
    except OSError as exc:
        raise ImageError(f"cannot read {records}: {exc.strerror}: run saltmarsh as the master's user (or root)") \
            from exc
    seen: set[str] = set()
    entries = []
    for root in file_roots:
        for relative in find_images(root):
            entries.append(_entry(root, relative, relative not in seen, served_to))
            seen.add(relative)
    return entries


def find_images(root: Path) -> Iterator[str]:
    """The relative paths of the image files under ``root``, sorted (none if ``root`` is missing)."""
    real_root = root.resolve()
    found = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(directory) / name
            if name.startswith(".") or not name.endswith(IMAGE_SUFFIXES) or not path.is_file():
                continue
            if Path(os.path.realpath(path)).is_relative_to(real_root):
                found.append(str(path.relative_to(root)))
    return iter(sorted(found))


def recorded_sha256(image: Path) -> str | None:
    """The sha256 in ``IMAGE.sha256`` if that file is at least as new as the image, else None."""
    checksum = image.with_name(image.name + ".sha256")
    try:
        if checksum.stat().st_mtime_ns < image.stat().st_mtime_ns:
            return None
        words = checksum.read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return None
    return words[0] if words and _SHA256.fullmatch(words[0]) else None


def _entry(root: Path, relative: str, served: bool, served_to: dict[str, dict[str, dict[str, Any]]]) -> ImageEntry:
    path = root / relative
    sha256 = recorded_sha256(path)
    sha256_from = "file"
    if sha256 is None:
        sha256, sha256_from = file_sha256(path), "computed"
    fetched = sorted(agent for agent, records in served_to.items()
                     if (records.get(sha256) or {}).get("fetched_at"))
    asked = sorted(agent for agent, records in served_to.items() if sha256 in records and agent not in fetched)
    try:
        info = qemu_info(path)
        image_format, virtual_size, error = str(info.get("format")), int(info["virtual-size"]), None
    except (ImageError, KeyError, ValueError, TypeError) as exc:
        image_format, virtual_size, error = "unknown", None, str(exc)
    return ImageEntry(path=relative, root=str(root), size=path.stat().st_size, format=image_format,
                      virtual_size=virtual_size, sha256=sha256, sha256_from=sha256_from, served=served,
                      fetched_by=fetched, asked_by=asked, error=error)
