"""The image file server: ``master://path`` resolved under ``file_roots`` and served in checksummed chunks.

A path is refused (with a logged reason) when it is absolute, has a ``..``
part, a NUL or other control character, or resolves (symlinks followed)
outside its root: the path traversal of CVE-2020-11652 cannot happen here.
A chunk index past the end of the file is refused too. Each file's manifest (size,
sha256 of the whole and of every chunk) is computed once per (path, size,
mtime) in a worker thread and cached; agents verify every chunk against it and
cache the file by its sha256.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from saltmarsh.protocol.messages import Failed, FileData, FileInfo, FileRead, FileStat, Message

from .errors import MasterError
from .request_channel import Request

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
MAX_PATH = 1024


class FileRefused(MasterError):
    """A file request the master will not serve (bad path, outside the roots, not a file)."""


@dataclass(frozen=True)
class Manifest:
    """What an agent needs to fetch and verify a file."""

    path: str
    size: int
    sha256: str
    chunk_size: int
    chunks: list[bytes]


def safe_relative(path: str) -> str:
    """Return ``path`` if it is a plain relative path, else raise FileRefused."""
    if not path or len(path) > MAX_PATH:
        raise FileRefused("empty or over-long path")
    if "\x00" in path:
        raise FileRefused("path contains a NUL byte")
    if not path.isprintable():
        # No image is named with a newline; refusing them keeps every logged path one line.
        raise FileRefused(f"path {path!r} contains a control character")
    if path.startswith("/"):
        raise FileRefused(f"absolute path {path!r}")
    if ".." in path.split("/"):
        raise FileRefused(f"path {path!r} climbs out with '..'")
    return path


class FileServer:
    """Resolves, checksums and reads files under the configured roots."""

    def __init__(self, roots: list[Path]) -> None:
        self._roots = [r.resolve() for r in roots]
        self._manifests: dict[tuple[str, int, int], Manifest] = {}
        self._building: dict[tuple[str, int, int], asyncio.Future[Manifest]] = {}

    def resolve(self, path: str) -> Path:
        """The real file for a request path; FileRefused if it leaves its root or is not a file."""
        relative = safe_relative(path)
        for root in self._roots:
            candidate = Path(os.path.realpath(root / relative))
            if not candidate.is_relative_to(root):
                raise FileRefused(f"{path!r} resolves to {str(candidate)!r}, outside the file root {root}")
            if candidate.is_file():
                return candidate
        raise FileRefused(f"no file {path!r} under the file roots")

    async def manifest(self, path: str) -> Manifest:
        """The manifest of ``path`` (computed in a worker thread once per size and mtime)."""
        real = self.resolve(path)
        stat = real.stat()
        key = (str(real), stat.st_size, stat.st_mtime_ns)
        cached = self._manifests.get(key)
        if cached is not None:
            return cached
        pending = self._building.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().run_in_executor(None, _build_manifest, real, path)
            self._building[key] = pending
        try:
            manifest = await pending
        finally:
            self._building.pop(key, None)
        self._manifests[key] = manifest
        return manifest

    async def read(self, path: str, index: int) -> bytes:
        """Chunk ``index`` of ``path`` (read in a worker thread)."""
        real = self.resolve(path)
        return await asyncio.get_running_loop().run_in_executor(None, _read_chunk, real, index)


def _build_manifest(real: Path, path: str) -> Manifest:
    whole = hashlib.sha256()
    chunks = []
    with real.open("rb") as handle:
        while block := handle.read(CHUNK_SIZE):
            whole.update(block)
            chunks.append(hashlib.sha256(block).digest())
    log.info("manifest of %s: %d chunks", path, len(chunks))
    return Manifest(path, real.stat().st_size, whole.hexdigest(), CHUNK_SIZE, chunks)


def _read_chunk(real: Path, index: int) -> bytes:
    with real.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        # Checked before seeking: an index near 2**64 would overflow seek() (OverflowError, not a refusal).
        if index * CHUNK_SIZE >= max(size, 1):
            raise FileRefused(f"chunk {index} is past the end of a {size}-byte file")
        handle.seek(index * CHUNK_SIZE)
        return handle.read(CHUNK_SIZE)


class FileRequests:
    """Request-channel handlers for ``file_stat`` and ``file_read``: refusals are logged and answered."""

    def __init__(self, server: FileServer) -> None:
        self._server = server

    async def on_stat(self, req: Request) -> Message:
        """Answer with the file's manifest, or Failed with the reason."""
        assert isinstance(req.body, FileStat)
        try:
            manifest = await self._server.manifest(req.body.path)
        except FileRefused as exc:
            return self._refuse(req, exc)
        return FileInfo(path=manifest.path, size=manifest.size, sha256=manifest.sha256,
                        chunk_size=manifest.chunk_size, chunks=manifest.chunks)

    async def on_read(self, req: Request) -> Message:
        """Answer with one chunk, or Failed with the reason."""
        assert isinstance(req.body, FileRead)
        try:
            data = await self._server.read(req.body.path, req.body.index)
        except FileRefused as exc:
            return self._refuse(req, exc)
        return FileData(index=req.body.index, data=data)

    @staticmethod
    def _refuse(req: Request, exc: FileRefused) -> Failed:
        log.warning("refused file request from %s: %s", req.agent_id, exc)
        return Failed(reason=str(exc))
