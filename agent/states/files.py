"""``file``: a regular file with this content, mode and owner, written atomically.

A new content goes to a temporary file in the same directory (mode and owner set on it
before the first byte, fsync'd) that is renamed over the old one: a reader sees the old file
or the new one, never half of one, and a crash leaves the old. A symbolic link at the path is
replaced by the file, never followed: the state says what is at that path.
"""

from __future__ import annotations

import difflib
import grp
import hashlib
import os
import pwd
import stat
import tempfile
from pathlib import Path

from saltmarsh.protocol.states import Change, FileState

from ..errors import StateError
from . import ABSENT, Facets, Kind

MAX_DIFF_LINES = 200


class File(Kind[FileState]):
    """Reads and writes one file."""

    request = FileState

    def current(self, state: FileState) -> Facets:
        """Content (its sha256), mode and owner of the file now; ``-`` for each if it is missing."""
        try:
            info = os.lstat(state.path)
        except FileNotFoundError:
            return {"content": ABSENT, "mode": ABSENT, "owner": ABSENT}
        except OSError as exc:
            raise StateError(f"{state.path}: {exc.strerror or exc}") from exc
        if stat.S_ISLNK(info.st_mode):
            return {"content": f"symlink to {os.readlink(state.path)}", "mode": ABSENT, "owner": ABSENT}
        if not stat.S_ISREG(info.st_mode):
            raise StateError(f"{state.path} exists and is not a regular file")
        return {"content": digest(Path(state.path).read_bytes()), "mode": f"{stat.S_IMODE(info.st_mode):04o}",
                "owner": f"{_user_name(info.st_uid)}:{_group_name(info.st_gid)}"}

    def desired(self, state: FileState) -> Facets:
        """The state's content digest, mode and owner."""
        return {"content": digest(state.content.encode()), "mode": f"{state.mode:04o}",
                "owner": f"{state.owner}:{state.group}"}

    def apply(self, state: FileState, changes: dict[str, Change]) -> None:
        """Write the file anew if its content differs, else only fix its mode and owner."""
        uid, gid = _ids(state)
        if "content" in changes:
            write_atomic(Path(state.path), state.content.encode(), state.mode, uid, gid)
            return
        try:
            if "owner" in changes:
                os.chown(state.path, uid, gid, follow_symlinks=False)
            if "mode" in changes:
                os.chmod(state.path, state.mode)
        except OSError as exc:
            raise StateError(f"{state.path}: {exc.strerror or exc}") from exc

    def detail(self, state: FileState, changes: dict[str, Change]) -> str:
        """A unified diff of the content (none for a secret, or a file that is not text)."""
        if "content" not in changes or state.secret:
            return ""
        try:
            old = Path(state.path).read_text() if changes["content"].old.startswith("sha256:") else ""
        except (OSError, UnicodeDecodeError):
            return ""
        lines = list(difflib.unified_diff(old.splitlines(), state.content.splitlines(), state.path, state.path,
                                          lineterm=""))
        if len(lines) > MAX_DIFF_LINES:
            lines = [*lines[:MAX_DIFF_LINES], f"... ({len(lines) - MAX_DIFF_LINES} more lines)"]
        return "\n".join(lines)


def digest(data: bytes) -> str:
    """How a content is shown: its sha256 (the first 16 digits) and its size."""
    return f"sha256:{hashlib.sha256(data).hexdigest()[:16]} ({len(data)} bytes)"


def write_atomic(path: Path, data: bytes, mode: int, uid: int, gid: int) -> None:
    """Replace ``path`` with ``data`` by a rename; StateError if its directory is missing or refuses."""
    try:
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".saltmarsh", dir=path.parent)
    except OSError as exc:
        raise StateError(f"{path}: cannot write in {path.parent}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(handle, "wb") as out:
            os.fchown(out.fileno(), uid, gid)
            os.fchmod(out.fileno(), mode)  # after chown, which clears set-id bits
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as exc:
        os.unlink(temp)
        raise StateError(f"{path}: {exc.strerror or exc}") from exc
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def _ids(state: FileState) -> tuple[int, int]:
    try:
        uid = pwd.getpwnam(state.owner).pw_uid
    except KeyError:
        raise StateError(f"{state.path}: no user {state.owner!r} on this host") from None
    try:
        gid = grp.getgrnam(state.group).gr_gid
    except KeyError:
        raise StateError(f"{state.path}: no group {state.group!r} on this host") from None
    return uid, gid


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
