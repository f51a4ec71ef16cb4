"""The image file server: ``master://path`` resolved under ``file_roots`` and served in checksummed chunks.

A path is refused (with a logged reason) when it is absolute, has a ``..``
part, a NUL or other control character, or resolves (symlinks followed)
outside its root: the path traversal of CVE-2020-11652 cannot happen here.
A chunk index past the end of the file is refused too. Each file's manifest (size,
sha256 of the whole, BLAKE3 of every chunk) is computed once per (path, size,
mtime) in a worker thread and cached; agents verify every chunk against it and
cache the file by its sha256.

What the master knows of agents' image caches (``ServedRecords``, when a records file is
given): which agent was sent the manifest of which file (by sha256), and whether it was
then sent the file's last chunk. The agent asks for a manifest every time it uses an
image, cached or not, and for chunks only when it fetches; so "fetched" means it was
sent the whole file, not that it still holds it. ``saltmarsh image list`` reads the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saltmarsh.protocol.digest import digest as chunk_digest
from saltmarsh.protocol.messages import Failed, FileData, FileInfo, FileRead, FileStat, Message

from ..errors import MasterError
from ..wire.request_channel import Request

log = logging.getLogger(__name__)

# 2 MiB: each chunk costs a request, two signatures and a round of the loop on both ends, which
# cost 12 % of the CPU per GiB at 1 MiB (bench/images.py); a chunk, sealed and framed, stays
# well under the default 4 MiB frame limit (protocol/limits.py) that every agent enforces.
CHUNK_SIZE = 2 * 1024 * 1024
MAX_PATH = 1024
# Under the master's root_dir: what was served to whom (saltmarsh image list reads it).
SERVED_RECORDS = "images-served.json"
MAX_RECORDS_PER_AGENT = 64
MAX_RECORDED_AGENTS = 10_000


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


class ServedRecords:
    """Which agent was sent which file's manifest, and which the whole file, kept in a small JSON file.

    ``{"version": 1, "agents": {AGENT: {SHA256: {"path", "size", "manifest_at", "fetched_at"}}}}``,
    times as seconds since the epoch (``fetched_at`` null until the last chunk was sent). At most
    MAX_RECORDS_PER_AGENT files per agent and MAX_RECORDED_AGENTS agents: the oldest go first.
    Written whole to a temporary file and renamed, so a reader never sees half of it.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        try:
            self._agents: dict[str, dict[str, dict[str, Any]]] = read_served_records(path)
        except OSError as exc:
            log.warning("starting with no records of served images: %s: %s", path, exc.strerror)
            self._agents = {}

    def manifest_served(self, agent: str, manifest: Manifest) -> None:
        """Note that ``agent`` was sent ``manifest``, and save."""
        with self._lock:
            records = self._agents.setdefault(agent, {})
            entry = records.setdefault(manifest.sha256, {"fetched_at": None})
            entry.update(path=manifest.path, size=manifest.size, manifest_at=time.time())
            _trim(records, MAX_RECORDS_PER_AGENT)
            _trim(self._agents, MAX_RECORDED_AGENTS)
            self._save()

    def fetched(self, agent: str, sha256: str) -> None:
        """Note that ``agent`` was sent the last chunk of the file ``sha256``, and save."""
        with self._lock:
            entry = self._agents.get(agent, {}).get(sha256)
            if entry is not None:
                entry["fetched_at"] = time.time()
                self._save()

    def _save(self) -> None:
        partial = self._path.with_name(f".{self._path.name}.partial")
        try:
            partial.write_text(json.dumps({"version": 1, "agents": self._agents}, sort_keys=True))
            os.replace(partial, self._path)
        except OSError as exc:
            log.warning("cannot save the records of served images in %s: %s", self._path, exc)


def _last_used(entry: Any) -> float:
    if isinstance(entry, dict) and "manifest_at" in entry:
        return float(entry["manifest_at"])
    return max((_last_used(value) for value in entry.values()), default=0.0) if isinstance(entry, dict) else 0.0


def _trim(records: dict[str, Any], limit: int) -> None:
    for key in sorted(records, key=lambda k: _last_used(records[k]))[:max(0, len(records) - limit)]:
        del records[key]


def read_served_records(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The records in ``path`` by agent and sha256: empty if the file is missing or not JSON; OSError otherwise."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        log.warning("ignoring the records of served images in %s: %s", path, exc)
        return {}
    agents = document.get("agents") if isinstance(document, dict) else None
    if not isinstance(agents, dict):
        return {}
    return {agent: records for agent, records in agents.items() if isinstance(records, dict)}


class FileServer:
    """Resolves, checksums and reads files under the configured roots.

    ``records``: the file to keep ServedRecords in (``<root_dir>/images-served.json``); None keeps none.
    """

    def __init__(self, roots: list[Path], records: Path | None = None) -> None:
        self._roots = [r.resolve() for r in roots]
        self._manifests: dict[tuple[str, int, int], Manifest] = {}
        self._building: dict[tuple[str, int, int], asyncio.Future[Manifest]] = {}
        self._records = ServedRecords(records) if records is not None else None

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

    async def note_manifest(self, agent: str, manifest: Manifest) -> None:
        """Record that ``agent`` was sent ``manifest`` (in a worker thread: it writes a file)."""
        if self._records is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._records.manifest_served, agent, manifest)

    async def note_read(self, agent: str, path: str, index: int) -> None:
        """Record a fetch as complete when ``index`` is the last chunk of ``path``'s manifest."""
        if self._records is None:
            return
        manifest = await self.manifest(path)  # cached: computed when the agent asked for it
        if index == max(len(manifest.chunks) - 1, 0):
            await asyncio.get_running_loop().run_in_executor(None, self._records.fetched, agent, manifest.sha256)


def _build_manifest(real: Path, path: str) -> Manifest:
    whole = hashlib.sha256()
    chunks = []
    with real.open("rb") as handle:
        while block := handle.read(CHUNK_SIZE):
            whole.update(block)
            chunks.append(chunk_digest(block))
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
        await self._server.note_manifest(req.agent_id, manifest)
        return FileInfo(path=manifest.path, size=manifest.size, sha256=manifest.sha256,
                        chunk_size=manifest.chunk_size, chunks=manifest.chunks)

    async def on_read(self, req: Request) -> Message:
        """Answer with one chunk, or Failed with the reason."""
        assert isinstance(req.body, FileRead)
        try:
            data = await self._server.read(req.body.path, req.body.index)
        except FileRefused as exc:
            return self._refuse(req, exc)
        await self._server.note_read(req.agent_id, req.body.path, req.body.index)
        return FileData(index=req.body.index, data=data)

    @staticmethod
    def _refuse(req: Request, exc: FileRefused) -> Failed:
        log.warning("refused file request from %s: %s", req.agent_id, exc)
        return Failed(reason=str(exc))
