"""Images: local paths checked against ``virt.image_dirs``, and the cache of ``master://`` images.

A local image is an absolute path on the hypervisor; it must lie, after
symlinks, under one of the configured image directories, because the agent
copies it, with its own rights, into a disk that a VM and whoever runs the VM
can read: without the check ``/etc/shadow`` (or the agent's own key) was an
image like any other.

The cache: ``master://`` images fetched in verified chunks, kept by sha256, never twice.

Up to WINDOW chunk requests are in flight over the request channel (the
master answers them concurrently); each reply, in whatever order it comes, is
checked against the length and the BLAKE3 digest that the master's signed
manifest lists for it and written at its offset. The whole file is not hashed again:
see chunk_lengths. The file appears under its hash only when complete (atomic
rename), so a half-fetched image is never used; a failed fetch removes its
partial file, and two inits wanting one image share one fetch.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any

from saltmarsh.protocol.digest import digest as chunk_digest
from saltmarsh.protocol.messages import Failed, FileData, FileInfo, FileRead, FileStat, Message
from saltmarsh.protocol.statedir import make_dirs

from ..errors import FunctionError, InvalidSpec
from .imagefile import ImageFile, ReserveFailed

log = logging.getLogger(__name__)

SCHEME = "master://"
# Chunk requests in flight per fetch: enough to hide the round trip (with 1 MiB chunks, 4 gave 65-90
# MB/s here, 8 gave 130-150, 16 no more), and half of the master's MAX_IN_FLIGHT, so other agents'
# requests get through.
WINDOW = 8
PROGRESS_EVERY = 64
REQUEST_TIMEOUT = 60.0
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

Request = Callable[[Message, float], "Future[Message]"]
Fire = Callable[[str, Any], None]


class ImageFetchError(FunctionError):
    """An image could not be fetched or did not verify."""


def local_image(image: str, allowed: tuple[Path, ...]) -> Path:
    """The file of an absolute image path, resolved through symlinks, if it lies under an ``allowed`` directory.

    InvalidSpec otherwise: outside every allowed directory (before or after
    symlinks), missing, or not a regular file. A path outside is refused before
    it is looked at, so a job cannot probe which files exist elsewhere.
    """
    dirs = _allowed_dirs(allowed)
    given = Path(os.path.normpath(image))
    if not given.is_absolute() or not _under(given, dirs):
        raise InvalidSpec(_outside(image, allowed))
    try:
        resolved = given.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise InvalidSpec(f"image {image} does not exist on this hypervisor") from exc
    if not _under(resolved, dirs):
        raise InvalidSpec(f"{_outside(image, allowed)}: it resolves to {resolved}")
    if not resolved.is_file():
        raise InvalidSpec(f"image {image} is not a regular file")
    return resolved


def _allowed_dirs(allowed: tuple[Path, ...]) -> list[Path]:
    """Each allowed directory as configured and as resolved (either spelling of a path inside it is inside)."""
    dirs = []
    for directory in allowed:
        dirs.append(Path(os.path.normpath(directory)))
        dirs.append(directory.resolve())
    return dirs


def _under(path: Path, dirs: list[Path]) -> bool:
    return any(path != directory and path.is_relative_to(directory) for directory in dirs)


def _outside(image: str, allowed: tuple[Path, ...]) -> str:
    where = ", ".join(str(d) for d in allowed) or "none"
    return f"image {image} is outside the image directories this hypervisor allows (virt.image_dirs: {where})"


class ImageCache:
    """Images under ``directory``, named by their sha256."""

    def __init__(self, directory: Path, agent_id: str, request: Request, fire: Fire) -> None:
        self._dir = directory
        self._agent_id = agent_id
        self._request = request
        self._fire = fire
        self._locks: collections.defaultdict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def fetch(self, ref: str) -> Path:
        """The local file of ``master://path``, fetched unless already cached."""
        if not ref.startswith(SCHEME):
            raise ImageFetchError(f"{ref!r} is not a {SCHEME} reference")
        info: FileInfo = self._ask(FileStat(path=ref[len(SCHEME):]), FileInfo)
        make_dirs(self._dir, 0o755)
        os.chmod(self._dir, 0o755)  # QEMU (another user) reads base images through this directory
        target = self._dir / info.sha256
        with self._guard:
            lock = self._locks[info.sha256]
        with lock:
            hit = target.is_file()
            self._fire(f"saltmarsh/virt/{self._agent_id}/image/{info.sha256[:16]}/cache", {"image": ref, "hit": hit})
            if hit:
                log.info("image %s already cached as %s", ref, target.name)
                return target
            self._download(ref, info, target)
        return target

    def _ask(self, message: Message, expected: type[Any]) -> Any:
        reply = self._request(message, REQUEST_TIMEOUT).result(REQUEST_TIMEOUT + 5)
        if isinstance(reply, Failed):
            raise ImageFetchError(f"the master refused {message.KIND}: {reply.reason}")
        if not isinstance(reply, expected):
            raise ImageFetchError(f"unexpected {reply.KIND} reply to {message.KIND}")
        return reply

    def _download(self, ref: str, info: FileInfo, target: Path) -> None:
        lengths = chunk_lengths(info)
        partial = self._dir / f".partial-{info.sha256}"
        started = time.monotonic()
        try:
            with ImageFile(partial, info.size, info.chunk_size) as file:
                self._transfer(ref, info, lengths, file, started)
                file.finish(0o644)  # QEMU (another user) reads the base image
            os.replace(partial, target)
        except ReserveFailed as exc:
            partial.unlink(missing_ok=True)
            raise ImageFetchError(f"{ref}: cannot reserve {info.size} bytes in the image cache: "
                                  f"{exc.strerror}") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self._progress(ref, info, info.size, started)
        log.info("fetched %s (%d bytes%s) in %.1f s", ref, info.size, ", direct I/O" if file.direct else "",
                 time.monotonic() - started)

    def _transfer(self, ref: str, info: FileInfo, lengths: list[int], file: ImageFile, started: float) -> None:
        """Keep WINDOW chunk requests in flight; verify each reply and write it at its offset as it comes."""
        pending: dict[Future[Message], int] = {}
        requested = done = verified = 0
        try:
            while verified < len(lengths):
                while requested < len(lengths) and len(pending) < WINDOW:
                    pending[self._request(FileRead(path=info.path, index=requested), REQUEST_TIMEOUT)] = requested
                    requested += 1
                finished, _ = wait(pending, REQUEST_TIMEOUT + 5, return_when=FIRST_COMPLETED)
                if not finished:
                    raise ImageFetchError(f"{ref}: no chunk arrived within {REQUEST_TIMEOUT + 5:.0f} s")
                for future in finished:
                    index = pending.pop(future)
                    data = _verified_chunk(future, index, info, lengths[index])
                    file.write(index, data)
                    done += len(data)
                    verified += 1
                    if verified % PROGRESS_EVERY == 0:
                        self._progress(ref, info, done, started)
        finally:
            for future in pending:
                future.cancel()  # a failed fetch leaves no request behind it

    def _progress(self, ref: str, info: FileInfo, done: int, started: float) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        self._fire(f"saltmarsh/virt/{self._agent_id}/image/{info.sha256[:16]}/progress",
                   {"image": ref, "done": done, "total": info.size, "mb_per_s": round(done / elapsed / 1e6, 1)})


def chunk_lengths(info: FileInfo) -> list[int]:
    """The length each chunk of ``info`` must have; ImageFetchError if its chunk list does not cover the file.

    With every chunk checked against its length and its digest in the signed manifest, the file
    written is exactly the bytes the master hashed, block by block, in the one pass that gave it
    the whole file's sha256 too (master/cloud/fileserver.py), so hashing the whole file again here would
    only re-derive that, at 0.6 s per GiB. What it would still catch is a master that signs a
    manifest whose two parts disagree; a master that lies can as well sign a consistent lie.
    """
    size, step = info.size, info.chunk_size
    if len(info.chunks) != -(-size // step):
        raise ImageFetchError(f"{info.path}: the manifest lists {len(info.chunks)} chunks for "
                              f"{size} bytes in chunks of {step}")
    if size == 0 and info.sha256 != EMPTY_SHA256:
        raise ImageFetchError(f"{info.path}: an empty file cannot have the sha256 {info.sha256}")
    return [min(step, size - index * step) for index in range(len(info.chunks))]


def _verified_chunk(future: Future[Message], index: int, info: FileInfo, length: int) -> bytes:
    reply = future.result()
    if isinstance(reply, Failed):
        raise ImageFetchError(f"chunk {index} of {info.path}: {reply.reason}")
    if not isinstance(reply, FileData) or reply.index != index:
        raise ImageFetchError(f"chunk {index} of {info.path}: unexpected reply")
    if len(reply.data) != length or chunk_digest(reply.data) != info.chunks[index]:
        raise ImageFetchError(f"chunk {index} of {info.path} does not match its digest in the manifest")
    return reply.data
