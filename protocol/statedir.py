"""One daemon per state directory: an exclusive lock on ``<root_dir>/lock``, held for the life of the process.

A second master (or agent) started with another config but the same
``root_dir`` would take over the first one's control socket, keys, job cache
or spool, and delete the socket when it exits. ``flock`` makes that a start-up
error instead. The kernel drops the lock when its holder dies, however it
dies, so a crashed daemon never leaves a stale lock behind; the file itself
stays (removing it would let a third daemon lock a new file while a second
still waits on the old one) and holds the last holder's pid, which is what the
refusal names.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

LOCK_FILE = "lock"
LOCK_FILE_MODE = 0o600
# Parents we create must stay traversable: the agent's image cache lies under its root_dir and QEMU,
# which runs as another user, opens base images through every directory above them.
PARENT_MODE = 0o711
# How long to wait for a holder that has the lock but has not written its pid yet.
PID_WAIT_SECONDS = 1.0


class StateDirBusy(Exception):
    """Raised when another live process holds the lock on a state directory; names its pid and the directory."""


def make_dirs(path: Path, mode: int, parents_mode: int = PARENT_MODE) -> None:
    """Create ``path`` (and any missing parent) with exactly ``mode`` (parents: ``parents_mode``), whatever the umask.

    Directories that exist already are left as they are: they may be the operator's.
    """
    missing = []
    for directory in (path, *path.parents):
        if directory.is_dir():
            break
        missing.append(directory)
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, so its mode is theirs too
        # mkdir's mode argument is masked by the umask; chmod is not.
        os.chmod(directory, mode if directory == path else parents_mode)


class StateDirLock:
    """The exclusive lock on one state directory; :meth:`acquire` it, :meth:`release` it (or let the process end)."""

    def __init__(self, directory: Path, mode: int) -> None:
        self.directory = directory
        self.mode = mode
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        """The lock file."""
        return self.directory / LOCK_FILE

    def acquire(self) -> None:
        """Create the directory if needed, lock it and write our pid; StateDirBusy if another process holds it."""
        make_dirs(self.directory, self.mode)
        # O_NOFOLLOW: a symlink planted as the lock file must not make us truncate whatever it points to.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, LOCK_FILE_MODE)
        try:
            os.fchmod(fd, LOCK_FILE_MODE)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = _holder_pid(fd)
            os.close(fd)
            raise StateDirBusy(
                f"{self.directory} is the state directory of another running saltmarsh daemon "
                f"(pid {holder}); one daemon per state directory"
            ) from exc
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock (closing the file is what releases a flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _holder_pid(fd: int) -> str:
    """The pid the holder wrote, waiting briefly for one that has locked but not yet written it."""
    deadline = time.monotonic() + PID_WAIT_SECONDS
    while True:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
        if text.isdigit() or time.monotonic() > deadline:
            return text if text.isdigit() else "unknown"
        time.sleep(0.02)


@contextlib.contextmanager
def locked_state_dirs(directories: Iterable[tuple[Path, int]]) -> Iterator[list[StateDirLock]]:
    """Hold the lock on each ``(directory, mode)`` while in the block; StateDirBusy (none held) if one is taken."""
    locks: list[StateDirLock] = []
    try:
        for directory, mode in directories:
            lock = StateDirLock(directory, mode)
            lock.acquire()
            locks.append(lock)
        yield locks
    finally:
        for lock in locks:
            lock.release()


__all__ = ["LOCK_FILE", "StateDirBusy", "StateDirLock", "locked_state_dirs", "make_dirs"]
