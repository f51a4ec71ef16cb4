"""Images: local paths checked against ``virt.image_dirs``, and the cache of ``master://`` images.

A local image is an absolute path on the hypervisor; it must lie, after
symlinks, under one of the configured image directories, because the agent
copies it, with its own rights, into a disk that a VM and whoever runs the VM
can read: without the check ``/etc/shadow`` (or the agent's own key) was an
image like any other.

The cache: ``master://`` images fetched in verified chunks, kept by sha256, never twice.

Chunks are requested a window at a time over the request channel; each is
checked against the sha256 the master's signed manifest lists for it, written
at its offset, and folded into the whole-file sha256, which must match too.
The file appears under its hash only when complete (atomic rename), so a
half-fetched image is never used; two inits wanting one image share one fetch.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from saltmarsh.protocol.messages import Failed, FileData, FileInfo, FileRead, FileStat, Message
from saltmarsh.protocol.statedir import make_dirs

from ..errors import FunctionError, InvalidSpec

log = logging.getLogger(__name__)

SCHEME = "master://"
WINDOW = 8
PROGRESS_EVERY = 64
REQUEST_TIMEOUT = 60.0

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
            if target.is_file():
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
        partial = self._dir / f".partial-{info.sha256}"
        whole = hashlib.sha256()
        started = time.monotonic()
        pending: collections.deque[tuple[int, Future[Message]]] = collections.deque()
        next_index = 0
        written = 0
        try:
            with partial.open("wb") as out:
                for index in range(len(info.chunks)):
                    while next_index < len(info.chunks) and len(pending) < WINDOW:
                        pending.append((next_index, self._request(FileRead(path=info.path, index=next_index),
                                                                  REQUEST_TIMEOUT)))
                        next_index += 1
                    expected_index, future = pending.popleft()
                    data = self._chunk(future, expected_index, info)
                    out.write(data)
                    whole.update(data)
                    written += len(data)
                    if (index + 1) % PROGRESS_EVERY == 0:
                        self._progress(ref, info, written, started)
            if written != info.size or whole.hexdigest() != info.sha256:
                raise ImageFetchError(f"{ref}: fetched file does not match its sha256 {info.sha256}")
            os.chmod(partial, 0o644)
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self._progress(ref, info, info.size, started)
        log.info("fetched %s (%d bytes) in %.1f s", ref, info.size, time.monotonic() - started)

    @staticmethod
    def _chunk(future: Future[Message], index: int, info: FileInfo) -> bytes:
        reply = future.result(REQUEST_TIMEOUT + 5)
        if isinstance(reply, Failed):
            raise ImageFetchError(f"chunk {index} of {info.path}: {reply.reason}")
        if not isinstance(reply, FileData) or reply.index != index:
            raise ImageFetchError(f"chunk {index} of {info.path}: unexpected reply")
        if hashlib.sha256(reply.data).digest() != info.chunks[index]:
            raise ImageFetchError(f"chunk {index} of {info.path} does not match its sha256")
        return reply.data

    def _progress(self, ref: str, info: FileInfo, done: int, started: float) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        self._fire(f"saltmarsh/virt/{self._agent_id}/image/{info.sha256[:16]}/progress",
                   {"image": ref, "done": done, "total": info.size, "mb_per_s": round(done / elapsed / 1e6, 1)})
