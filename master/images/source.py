"""The saltmarsh source tree the guest's agent comes from, its hash, and its wheels.

The wheels are built with Debian's own ``/usr/bin/python3`` (the guest runs the same
Debian Python) from a *copy* of the tree, since a wheel build writes ``build/`` and
``*.egg-info`` into the tree it builds. The copy holds exactly the files a build reads
(``SOURCE_FILES`` and ``SOURCE_DIRS``, no caches), and its hash is the recipe's
``source_sha256``: the same tree makes the same recipe hash on any machine. Every
dependency is pinned by the tree's own ``constraints.txt`` (``pip wheel -c``, and
``--build-constraint`` for the build back-ends).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import IO

from .errors import BuildRefused
from .process import run

SOURCE_FILES = ("setup.cfg", "pyproject.toml", "README.md", "constraints.txt")
SOURCE_DIRS = ("master", "agent", "protocol", "pki", "systemd")
HOST_PYTHON = Path("/usr/bin/python3")
PIP_TIMEOUT = 900.0
_SKIPPED_DIRS = {"__pycache__"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def installed_tree() -> Path:
    """The source tree this saltmarsh runs from (a checkout, or an editable install); BuildRefused if none."""
    import saltmarsh.master

    candidate = Path(saltmarsh.master.__file__).resolve().parent.parent
    return check_tree(candidate)


def check_tree(root: Path) -> Path:
    """``root`` if it is a saltmarsh source tree (setup.cfg naming saltmarsh, and the package folders)."""
    try:
        named = "name = saltmarsh" in (root / "setup.cfg").read_text()
    except OSError:
        named = False
    missing = [name for name in (*SOURCE_FILES, *SOURCE_DIRS) if not (root / name).exists()]
    if not named or missing:
        raise BuildRefused(f"{root} is not a saltmarsh source tree (missing {', '.join(missing) or 'its name'}): "
                           "pass --source DIR, a checkout of saltmarsh")
    return root


def tree_files(root: Path) -> list[str]:
    """The relative paths of every file a build reads from ``root``, sorted."""
    files = [name for name in SOURCE_FILES]
    for top in SOURCE_DIRS:
        for directory, dirs, names in os.walk(root / top):
            dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
            for name in names:
                if not name.startswith(".") and not name.endswith(_SKIPPED_SUFFIXES):
                    files.append(str((Path(directory) / name).relative_to(root)))
    return sorted(files)


def tree_sha256(root: Path) -> str:
    """The hash of the tree: every file's path, executable bit and content, in sorted order."""
    whole = hashlib.sha256()
    for relative in tree_files(root):
        path = root / relative
        executable = "x" if os.access(path, os.X_OK) else "-"
        whole.update(f"{relative}\0{executable}\0{_file_sha256(path)}\n".encode())
    return whole.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def copy_tree(root: Path, target: Path) -> None:
    """Copy the files a build reads from ``root`` into the new directory ``target``."""
    for relative in tree_files(root):
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, destination)


def build_wheels(source: Path, wheels: Path, venv: Path, log: IO[str]) -> list[Path]:
    """Wheels of saltmarsh (from the copy ``source``) and every pinned dependency, into ``wheels``.

    ``venv`` is a virtualenv of the host's /usr/bin/python3 holding the pinned pip (reused
    between builds; pip's own wheel cache keeps libvirt-python's compiled wheel too).
    """
    constraints = str(source / "constraints.txt")
    pip = venv / "bin" / "pip"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    if not pip.exists():
        run([str(HOST_PYTHON), "-m", "venv", str(venv)], timeout=120, log=log)
        # Debian's pip does not know --build-constraint: first the pinned one.
        run([str(pip), "install", "-q", "-c", constraints, "pip"], timeout=PIP_TIMEOUT, log=log, env=env)
    run([str(pip), "wheel", "-q", "-c", constraints, "--build-constraint", constraints,
         "--wheel-dir", str(wheels), str(source)], timeout=PIP_TIMEOUT, log=log, env=env)
    return sorted(wheels.glob("*.whl"))


def host_python() -> str:
    """The major.minor version of the host's /usr/bin/python3 (from its real file name, python3.11)."""
    real = HOST_PYTHON.resolve().name
    if not real.startswith("python3."):
        raise BuildRefused(f"{HOST_PYTHON} is {real}, not a python3.X: cannot tell which Python it is")
    return real.removeprefix("python")
