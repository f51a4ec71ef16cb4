"""``saltmarsh image build``: the stages, the workspace, and publishing into the first file root.

Stages (one progress line each, with the seconds since the start):

    source   copy the saltmarsh tree (the files a build reads) and hash it: the recipe is complete
    wheels   saltmarsh and its pinned dependencies, built with the host's /usr/bin/python3
    base     the Debian base (mmdebstrap: Debian, the kernel, cloud-init, config, the user), kept as
             a tarball in the cache for a week (``--refresh`` makes it anew); cached, this is instant
    rootfs   the base unpacked, the agent's venv installed from the wheels and run, its unit
    disk     MBR + FAT /boot with SYSLINUX + ext4 root, written into one sparse raw file
    qcow2    qemu-img convert (compressed) into a hidden file in the file root, and its sha256
    publish  NAME.qcow2, NAME.qcow2.sha256 and NAME.recipe.json renamed into place

Nothing half-made is ever visible: the work happens in a directory under the cache
directory, the image is written to a hidden name on the file root's own filesystem and
renamed at the end. Any error, Ctrl-C, SIGTERM or SIGHUP removes the work directory and
the hidden files (after unmounting anything a killed mmdebstrap left mounted inside).
One build at a time per cache directory (a lock), since builds share the .deb cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import disk, guest, source
from .errors import BuildFailed, BuildRefused
from .process import output, run, signals_interrupt
from .recipe import Recipe, check_name

Progress = Callable[[str], None]

TOOLS = {"mmdebstrap": "mmdebstrap", "zstd": "zstd", "mkfs.ext4": "e2fsprogs", "mkfs.vfat": "dosfstools",
         "mcopy": "mtools", "syslinux": "syslinux", "sfdisk": "fdisk", "qemu-img": "qemu-utils", "chroot": "coreutils"}
MMDEBSTRAP_TIMEOUT = 1800.0
CONVERT_TIMEOUT = 900.0
TAR_TIMEOUT = 600.0
MiB = 1024 * 1024


@dataclass(frozen=True)
class BuildRequest:
    """One build: the image's name, its recipe, and where things go.

    ``recipe.source_sha256`` is replaced by the hash of the tree actually copied, unless
    ``pinned_source`` (a build from a recipe file): then the tree must have that hash.
    ``refresh``: make the Debian base anew even if this week's is cached.
    """

    name: str
    recipe: Recipe
    file_root: Path
    cache_dir: Path
    source: Path
    force: bool = False
    pinned_source: bool = False
    refresh: bool = False


@dataclass(frozen=True)
class BuildResult:
    """What a build made."""

    name: str
    path: Path
    sha256: str
    size: int
    virtual_size: int
    recipe_sha256: str
    kernel: str
    packages: int
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The result as JSON values (``image build --json``)."""
        data = dataclasses.asdict(self)
        data["path"] = str(self.path)
        return data


def image_paths(file_root: Path, name: str) -> tuple[Path, Path, Path]:
    """The image, its checksum file and its recipe file in ``file_root``."""
    return file_root / f"{name}.qcow2", file_root / f"{name}.qcow2.sha256", file_root / f"{name}.recipe.json"


def preflight(name: str, file_roots: list[Path], force: bool) -> Path:
    """The file root to build ``name`` into; BuildRefused (one line) when the build must not start."""
    if os.geteuid() != 0:
        raise BuildRefused("image build must run as root (mmdebstrap's root mode, chroot, file ownership)")
    if not file_roots:
        raise BuildRefused("file_roots is empty in master.yaml: there is nowhere to put the image")
    check_name(name)
    root = file_roots[0]
    if not root.is_dir():
        raise BuildRefused(f"the first file root {root} is not a directory")
    image = image_paths(root, name)[0]
    if image.exists() and not force:
        raise BuildRefused(f"{image} exists (--force replaces it)")
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise BuildRefused(f"missing tools: apt-get install {' '.join(missing)} (scripts/setup.sh installs them)")
    return root


class Clock:
    """Stage timings and the progress lines."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._start = time.monotonic()
        self._last = self._start
        self.stages: dict[str, float] = {}

    def done(self, stage: str, detail: str) -> None:
        """Record ``stage`` as finished now and print its line."""
        now = time.monotonic()
        self.stages[stage] = round(now - self._last, 1)
        self._last = now
        self._progress(f"[{now - self._start:6.1f}s] {stage:<8} {self.stages[stage]:6.1f} s  {detail}")

    @property
    def elapsed(self) -> float:
        """Seconds since the build started."""
        return round(time.monotonic() - self._start, 1)


def build(request: BuildRequest, progress: Progress) -> BuildResult:
    """Build the image of ``request`` into its file root; BuildFailed or BuildInterrupted leave nothing."""
    host = source.host_python()
    if host != request.recipe.python:
        raise BuildRefused(f"{request.recipe.release} runs Python {request.recipe.python} but this host's "
                           f"/usr/bin/python3 is {host}: the agent's wheels would not fit; build on a "
                           f"{request.recipe.release} host")
    if any(char.isspace() for char in str(request.cache_dir)):
        raise BuildRefused(f"cache directory {request.cache_dir!r} has a space (mmdebstrap splits hooks on them)")
    request.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _lock(request.cache_dir), signals_interrupt(), _workspace(request) as work:
        log_path = request.cache_dir / f"{request.name}.build.log"
        with log_path.open("w", encoding="utf-8") as log:
            progress(f"building {request.name}.qcow2 in {request.file_root} (log: {log_path})")
            try:
                return _stages(request, work, log, Clock(progress))
            except BuildFailed as exc:
                raise BuildFailed(f"{exc} (log: {log_path})") from exc


@dataclass
class Work:
    """The workspace of one build: a directory for the parts, hidden names in the file root for the results."""

    dir: Path
    partial: list[Path]


def _stages(request: BuildRequest, work: Work, log: IO[str], clock: Clock) -> BuildResult:
    recipe = _source(request, work.dir / "src")
    clock.done("source", f"{len(source.tree_files(work.dir / 'src'))} files, sha256 {recipe.source_sha256[:16]}, "
                         f"recipe {recipe.sha256[:16]}")
    wheels = _wheels(request, recipe, work.dir, log)
    clock.done("wheels", f"{len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / MiB:.1f} MiB")
    base, how = _base(request, recipe, work.dir, log)
    clock.done("base", how)
    rootfs, installed = _rootfs(request, recipe, work.dir, log, base)
    kernel = disk.find_kernel(rootfs)
    clock.done("rootfs", f"{recipe.release}, {kernel.version}, {len(installed)} packages, "
                         f"{disk.tree_bytes(rootfs) / MiB:.0f} MiB, the agent installed and run")
    raw = work.dir / "disk.raw"
    layout = disk.plan(recipe.size, kernel, rootfs)
    disk.assemble(raw, layout, rootfs, kernel, recipe.sha256, log)
    clock.done("disk", f"boot {layout.boot_size // MiB} MiB + root {layout.root_size // MiB} MiB, "
                       f"{_allocated(raw) / MiB:.0f} MiB allocated")
    image, checksum, recipe_file = image_paths(request.file_root, request.name)
    hidden = [_hidden(path) for path in (image, checksum, recipe_file)]
    work.partial.extend(hidden)
    # zstd, 8 coroutines writing out of order: 2.5 s here where zlib in order took 19 s, and 2 % smaller
    # (QEMU reads zstd-compressed qcow2 since 5.1; Debian 12 has 7.2). Compressed, the image is 37 % of
    # its raw data: fewer chunks for every agent to fetch.
    run(["qemu-img", "convert", "-q", "-c", "-W", "-m", "8", "-f", "raw", "-O", "qcow2",
         "-o", "compression_type=zstd", str(raw), str(hidden[0])], timeout=CONVERT_TIMEOUT, log=log)
    hidden[0].chmod(0o644)
    sha256 = file_sha256(hidden[0])
    size = hidden[0].stat().st_size
    clock.done("qcow2", f"{size / MiB:.0f} MiB, sha256 {sha256[:16]}")
    _write(hidden[1], f"{sha256}  {image.name}\n")
    _write(hidden[2], json.dumps(recipe.document(request.name, sha256=sha256, kernel=kernel.version,
                                                 built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                 installed=installed), indent=2, sort_keys=True) + "\n")
    # The image first: a checksum file older than its image is stale, and catalog.py recomputes it.
    for partial, final in zip(hidden, (image, checksum, recipe_file), strict=True):
        os.replace(partial, final)
    work.partial.clear()
    clock.done("publish", f"{image}")
    return BuildResult(name=request.name, path=image, sha256=sha256, size=size, virtual_size=recipe.size,
                       recipe_sha256=recipe.sha256, kernel=kernel.version, packages=len(installed),
                       seconds=clock.elapsed, stages=dict(clock.stages))


def _source(request: BuildRequest, copy: Path) -> Recipe:
    source.copy_tree(request.source, copy)
    actual = source.tree_sha256(copy)
    if request.pinned_source and actual != request.recipe.source_sha256:
        raise BuildRefused(f"the recipe was made from source {request.recipe.source_sha256[:16]}, but {request.source} "
                           f"is {actual[:16]}: check out that tree, or build without --recipe")
    return dataclasses.replace(request.recipe, source_sha256=actual)


def _wheels(request: BuildRequest, recipe: Recipe, work: Path, log: IO[str]) -> list[Path]:
    constraints = hashlib.sha256((work / "src" / "constraints.txt").read_bytes()).hexdigest()[:12]
    venv = request.cache_dir / f"build-venv-py{recipe.python}-{constraints}"
    wheels = work / "wheels"
    wheels.mkdir()
    return source.build_wheels(work / "src", wheels, venv, log)


def _base(request: BuildRequest, recipe: Recipe, work: Path, log: IO[str]) -> tuple[Path, str]:
    """The Debian base's tarball in the cache (made now unless cached this week) and how it was had."""
    period = time.strftime("%G-W%V", time.gmtime())
    family = guest.base_key(recipe, "")
    tarball = request.cache_dir / f"base-{recipe.release}-{family}-{period}.tar.zst"
    if tarball.is_file() and not request.refresh:
        return tarball, f"cached {tarball.name}"
    debs = request.cache_dir / f"debs-{recipe.release}"
    debs.mkdir(exist_ok=True, mode=0o755)
    paths = guest.BasePaths(rootfs=work / "base", overlay=work / "overlay", deb_cache=debs,
                            new_deb_cache=work / "debs-new")
    guest.write_overlay(paths.overlay, guest.base_files(recipe))
    run(guest.base_command(recipe, paths), timeout=MMDEBSTRAP_TIMEOUT, log=log)
    partial = work / tarball.name
    run(["tar", "-C", str(paths.rootfs), "--numeric-owner", "--xattrs", "--xattrs-include=*",
         "-I", "zstd -T0 -3 -q", "-cf", str(partial), "."], timeout=TAR_TIMEOUT, log=log)
    for old in request.cache_dir.glob(f"base-{recipe.release}-{family}-*.tar.zst"):
        old.unlink()  # last week's base of the same settings
    os.replace(partial, tarball)
    # This build's packages replace the .deb cache (old versions go): the next base finds exactly these.
    stale = work / "debs-old"
    os.replace(debs, stale)
    os.replace(paths.new_deb_cache, debs)
    shutil.rmtree(stale)
    os.replace(paths.rootfs, work / "rootfs")  # no need to unpack what is already here
    return tarball, f"made {tarball.name} ({tarball.stat().st_size / MiB:.0f} MiB)"


def _rootfs(request: BuildRequest, recipe: Recipe, work: Path, log: IO[str], base: Path) -> tuple[Path, list[str]]:
    """The guest's tree: the base (unpacked, unless _base just made it here) with the agent installed."""
    rootfs = work / "rootfs"
    if not rootfs.exists():
        rootfs.mkdir(mode=0o755)
        run(["tar", "-C", str(rootfs), "--numeric-owner", "--xattrs", "--xattrs-include=*", "-I", "zstd -T0 -q",
             "-xpf", str(base)], timeout=TAR_TIMEOUT, log=log)
    unit = (work / "src" / "systemd" / guest.AGENT_UNIT).read_text()
    return rootfs, guest.install_agent(rootfs, work / "wheels", unit, log)


def _hidden(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial-{os.getpid()}")


def _write(path: Path, text: str) -> None:
    with path.open("x", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o644)


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def qemu_info(path: Path) -> dict[str, Any]:
    """``qemu-img info --output=json`` of a file (``-U``: also while a VM holds it open)."""
    info: dict[str, Any] = json.loads(output(["qemu-img", "info", "-U", "--output=json", str(path)], timeout=60))
    return info


@contextlib.contextmanager
def _lock(cache_dir: Path) -> Iterator[None]:
    with (cache_dir / "build.lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildRefused(f"another image build is running with the cache {cache_dir}") from None
        yield


@contextlib.contextmanager
def _workspace(request: BuildRequest) -> Iterator[Work]:
    parent = request.cache_dir / "work"
    parent.mkdir(exist_ok=True, mode=0o700)
    work = Work(dir=Path(tempfile.mkdtemp(prefix=f"{request.name}-", dir=parent)), partial=[])
    try:
        yield work
    finally:
        for path in work.partial:
            path.unlink(missing_ok=True)
        remove_tree(work.dir)


def remove_tree(path: Path) -> None:
    """Remove a work directory, first unmounting whatever is mounted inside it (a killed mmdebstrap's /proc).

    BuildFailed, leaving the directory, if a mount inside cannot be undone: removing files
    through a live /dev or /proc mount is not something to risk.
    """
    mounts = mounts_under(path)
    for mount in sorted(mounts, key=lambda p: len(p.parts), reverse=True):
        subprocess.run(["umount", "--lazy", str(mount)], capture_output=True, timeout=60, check=False)
    if mounts_under(path):
        raise BuildFailed(f"{path} still has mounts inside ({', '.join(map(str, mounts_under(path)))}): "
                          "unmount them and remove it by hand")
    if path.exists():
        shutil.rmtree(path)


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo)."""
    resolved = path.resolve()
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            point = Path(line.split()[4].encode().decode("unicode_escape"))
            if point == resolved or point.is_relative_to(resolved):
                found.append(point)
    return found
