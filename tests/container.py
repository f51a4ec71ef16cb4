"""A booted Debian container (systemd as PID 1) with the saltmarsh agent and setup helper, in its own network namespace.

What it is made of, all real:

* the Debian base of ``saltmarsh image build`` (master/images/build.py ``_base``: the cached
  mmdebstrap tarball, made if this week's is missing), unpacked into a temporary directory;
* the agent installed into it from wheels of this tree as the image build installs it
  (master/images/guest.py ``install_agent``), with its unit and the setup helper's unit;
* apt pointed at a flat repository of .deb files the test serves from a directory of its own
  (bound read-only into the container): the container needs no network beyond its namespace;
* ``systemd-nspawn -b`` in a network namespace made here (``--network-namespace-path``: the
  container shares the namespace's loopback with the test's master, and nothing leaves it).
  ``ip netns exec ... systemd-nspawn`` does not work on this host: ``ip netns exec`` mounts a
  fresh /sys, which hides the cgroup hierarchy nspawn needs ("Failed to determine whether the
  unified cgroups hierarchy is used"); nspawn's own option joins the namespace without that.

Every step has a timeout, and ``Container.close`` (also on failure) stops the container, kills
what is left in the namespace, deletes it, and removes the tree.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from saltmarsh.master.images import build, guest, source
from saltmarsh.master.images.errors import BuildRefused
from saltmarsh.master.images.recipe import Recipe

ROOT = Path(__file__).resolve().parent.parent
IMAGE_CACHE = Path("/var/cache/saltmarsh-images/cache")  # shared with image builds: the Debian base
OWN_CACHE = Path("/var/cache/saltmarsh-images/container")  # this harness's wheel venv and .debs
REPO_INSIDE = "/srv/saltmarsh-repo"
WHEELS_INSIDE = "/root/saltmarsh-wheels"  # where a bare container finds the wheels an enrollment installs
TOOLS = ("systemd-nspawn", "ip", "nsenter", "dpkg-scanpackages", "zstd", "tar", "chroot", "apt-get")
BOOT_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
LOCK_WAIT = 900.0  # another image build may hold the cache for its mmdebstrap
HELPER_UNIT = "saltmarsh-setup-helper.service"
# nspawn mounts the container's /proc/sys read-only (it does not know the namespace is the test's own).
# net.* is per network namespace, so /proc/sys/net alone is made writable, in the container's own mount
# namespace before the helper starts (its namespace is a copy): the sysctl states then touch only the
# test's namespace. On a real host /proc/sys is writable anyway. (An ExecStartPre=+ of the helper's
# own unit does not do: its mount does not reach the namespace the helper runs in.)
NET_SYSCTL_UNIT = "saltmarsh-test-net-sysctl.service"
NET_SYSCTL = f"""\
[Unit]
Description=make /proc/sys/net writable in this test container (its network namespace is the test's own)
Before={HELPER_UNIT}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mount --bind /proc/sys/net /proc/sys/net && mount -o remount,bind,rw /proc/sys/net'

[Install]
WantedBy=multi-user.target
"""
# Units that have no business in a test container: cloud-init (no seed), waiting for a network that
# is only a loopback, and systemd-sysctl (its defaults would be written into the host's kernel).
MASKED = ("cloud-init.service", "cloud-init-local.service", "cloud-config.service", "cloud-final.service",
          "systemd-networkd-wait-online.service", "systemd-sysctl.service")


def skip_reason() -> str | None:
    """Why containers cannot run here (not root, a tool missing), or None."""
    if os.geteuid() != 0:
        return "booting a systemd container needs root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    return f"missing tools: {', '.join(missing)} (scripts/install-container-tools.sh)" if missing else None


def run(argv: list[str], *, timeout: float, log: IO[str] | None = None, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with a timeout; AssertionError naming it and its output if ``check`` and it fails."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd,
                            stdin=subprocess.DEVNULL)
    if log is not None:
        log.write(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}")
    if check and result.returncode != 0:
        output = result.stderr[-2000:] + result.stdout[-2000:]
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}: {output}")
    return result


@dataclass(frozen=True)
class Parts:
    """What every container of a session is made from."""

    rootfs_tarball: Path  # the base with the agent installed (bare: without)
    repo: Path  # the flat apt repository
    wheels: Path | None = None  # bare parts: the agent's wheels, for an enrollment script to install


def base_tarball(log: IO[str]) -> Path:
    """This week's Debian base of the default recipe, from the image cache (made now if missing)."""
    recipe = Recipe.make(source_sha256=source.tree_sha256(ROOT))
    request = build.BuildRequest(name="container", recipe=recipe, file_root=IMAGE_CACHE, cache_dir=IMAGE_CACHE,
                                 source=ROOT)
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True, mode=0o700)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            with build._lock(IMAGE_CACHE), tempfile.TemporaryDirectory(dir=IMAGE_CACHE) as work:
                tarball, how = build._base(request, recipe, Path(work), log)
                log.write(f"base: {how}\n")
                return tarball
        except BuildRefused:
            if time.monotonic() > deadline:
                raise
            time.sleep(5)  # an image build holds the cache: its base is ours too once it is done


def agent_wheels(work: Path, log: IO[str]) -> Path:
    """Wheels of this tree and its pinned dependencies, built as the image build builds them."""
    copy = work / "src"
    source.copy_tree(ROOT, copy)
    OWN_CACHE.mkdir(parents=True, exist_ok=True, mode=0o700)
    wheels = work / "wheels"
    wheels.mkdir()
    source.build_wheels(copy, wheels, OWN_CACHE / f"build-venv-py{source.host_python()}", log)
    return wheels


def local_repo(directory: Path, packages: list[str], log: IO[str]) -> Path:
    """A flat apt repository of ``packages`` (no dependencies beyond the base): .debs kept in OWN_CACHE."""
    debs = OWN_CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    wanted = [name for name in packages if not list(debs.glob(f"{name}_*.deb"))]
    if wanted:
        # Downloaded once on the host (the test's container never reaches a mirror) and kept.
        shutil.chown(debs, "_apt")
        run(["apt-get", "download", *wanted], timeout=300, log=log, cwd=debs)
    directory.mkdir(parents=True)
    for name in packages:
        for deb in debs.glob(f"{name}_*.deb"):
            shutil.copy2(deb, directory / deb.name)
    index = run(["dpkg-scanpackages", "--multiversion", "."], timeout=120, cwd=directory).stdout
    (directory / "Packages").write_text(index)
    directory.chmod(0o755)
    return directory


def make_parts(work: Path, packages: list[str], log: IO[str], *, dependencies: bool = False) -> Parts:
    """The base with the agent and both units installed, packed; and the repository.

    ``dependencies``: the repository holds what ``packages`` need beyond the base too (libvirt's
    and QEMU's libraries), as apt on this host resolves it against the base's own dpkg status.
    """
    rootfs = _base_rootfs(work, log)
    if dependencies:
        packages = closure(rootfs, packages, log)
    units = ROOT / "systemd"
    guest.install_agent(rootfs, agent_wheels(work, log), (units / guest.AGENT_UNIT).read_text(), log)
    _write(rootfs, f"/usr/lib/systemd/system/{HELPER_UNIT}", (units / HELPER_UNIT).read_text())
    run(["chroot", str(rootfs), "systemctl", "enable", guest.AGENT_UNIT, HELPER_UNIT], timeout=120, log=log)
    return Parts(_pack(work, rootfs, log), local_repo(work / "repo", packages, log))


def closure(rootfs: Path, packages: list[str], log: IO[str]) -> list[str]:
    """``packages`` and every package they need that the tree ``rootfs`` lacks (no recommends)."""
    status = rootfs / "var/lib/dpkg/status"
    simulated = run(["apt-get", "install", "-s", "-q", "--no-install-recommends", "-o",
                     f"Dir::State::status={status}", *packages], timeout=300, log=log).stdout
    return sorted({line.split()[1] for line in simulated.splitlines() if line.startswith("Inst ")})


def make_bare_parts(work: Path, log: IO[str]) -> Parts:
    """The base as a fresh host has it (no agent, no units of ours), packed; the agent's wheels beside it."""
    rootfs = _base_rootfs(work, log)
    wheels = agent_wheels(work, log)
    return Parts(_pack(work, rootfs, log), local_repo(work / "repo", ["hello"], log), wheels)


def _base_rootfs(work: Path, log: IO[str]) -> Path:
    """The Debian base unpacked, fitted for a container: apt on the local repository, no cloud-init."""
    rootfs = work / "rootfs"
    rootfs.mkdir(mode=0o755)
    run(["tar", "-C", str(rootfs), "--numeric-owner", "--xattrs", "--xattrs-include=*", "-I", "zstd -T0 -q",
         "-xpf", str(base_tarball(log))], timeout=600, log=log)
    _write(rootfs, f"/etc/systemd/system/{NET_SYSCTL_UNIT}", NET_SYSCTL)
    _write(rootfs, "/etc/fstab", "")  # the root is the container's directory, not a labelled disk
    _write(rootfs, "/etc/apt/sources.list", f"deb [trusted=yes] file:{REPO_INSIDE} ./\n")
    for extra in (rootfs / "etc/apt/sources.list.d").glob("*"):
        extra.unlink()
    for unit in MASKED:
        link = rootfs / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    run(["chroot", str(rootfs), "systemctl", "enable", NET_SYSCTL_UNIT], timeout=120, log=log)
    return rootfs


def _pack(work: Path, rootfs: Path, log: IO[str]) -> Path:
    packed = work / "rootfs.tar.zst"
    run(["tar", "-C", str(rootfs), "--numeric-owner", "--xattrs", "--xattrs-include=*", "-I", "zstd -T0 -1 -q",
         "-cf", str(packed), "."], timeout=600, log=log)
    shutil.rmtree(rootfs)
    return packed


def _write(rootfs: Path, inside: str, text: str) -> None:
    path = rootfs / inside.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    path.write_text(text)
    path.chmod(0o644)


class Container:
    """One booted container in its own network namespace; ``close()`` undoes everything."""

    def __init__(self, work: Path, name: str, parts: Parts) -> None:
        self.name = name
        self.netns = name
        self.work = work
        self.rootfs = work / "rootfs"
        self.parts = parts
        self.log_path = work / "console.log"
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._netns_made = False

    def create(self, files: dict[str, str]) -> None:
        """Make the namespace and the tree (with ``files`` written into it); boot nothing yet."""
        run(["ip", "netns", "add", self.netns], timeout=30)
        self._netns_made = True
        run(["ip", "-n", self.netns, "link", "set", "lo", "up"], timeout=30)
        self.rootfs.mkdir(mode=0o755)
        run(["tar", "-C", str(self.rootfs), "--numeric-owner", "--xattrs", "--xattrs-include=*", "-I", "zstd -T0 -q",
             "-xpf", str(self.parts.rootfs_tarball)], timeout=600)
        for inside, text in files.items():
            _write(self.rootfs, inside, text)

    def netns_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run in the container's network namespace (for the test's master)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def boot(self) -> None:
        """Boot the container and wait until systemd says the system is up."""
        argv = ["systemd-nspawn", "-q", "--keep-unit", "--register=no", "--console=read-only",
                f"--network-namespace-path=/run/netns/{self.netns}", "-D", str(self.rootfs), "-M", self.name,
                f"--bind-ro={self.parts.repo}:{REPO_INSIDE}",
                *([f"--bind-ro={self.parts.wheels}:{WHEELS_INSIDE}"] if self.parts.wheels else []),
                # nspawn grants CAP_NET_ADMIN only with a private network it made itself; this namespace is
                # the test's own too, and the sysctl states need it for net.* (only this namespace's).
                "--capability=CAP_NET_ADMIN", "-b"]
        with self.log_path.open("ab") as log:
            self._nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while self._leader() is None:
            if self._nspawn.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the container did not start: {self.console()[-3000:]}")
            time.sleep(0.2)
        state = ""
        while state not in ("running", "degraded"):  # "" until systemd answers on its bus at all
            if time.monotonic() > deadline:
                raise AssertionError(f"the container's systemd is {state!r}: {self.console()[-3000:]}")
            time.sleep(0.5)
            state = self.exec("systemctl", "is-system-running", "--wait", check=False,
                              timeout=BOOT_TIMEOUT).stdout.strip()

    def _leader(self) -> int | None:
        """The container's PID 1 (systemd), seen from the host."""
        if self._nspawn is None:
            return None
        children = Path(f"/proc/{self._nspawn.pid}/task/{self._nspawn.pid}/children")
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        return None

    def exec(self, *argv: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (all its namespaces, as root)."""
        leader = self._leader()
        assert leader is not None, "the container is not running"
        return run(["nsenter", "-t", str(leader), "-a", "--", *argv], timeout=timeout, check=check)

    def console(self) -> str:
        """What the container printed on its console."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        """Stop the container (orderly, then killed), empty and delete the namespace, remove the tree."""
        if self._nspawn is not None and self._nspawn.poll() is None:
            self._nspawn.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
            try:
                self._nspawn.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self._nspawn.pid, signal.SIGKILL)
                self._nspawn.wait(STOP_TIMEOUT)
        if self._netns_made:
            pids = run(["ip", "netns", "pids", self.netns], timeout=30, check=False).stdout.split()
            for pid in pids:  # only what this test started in its own namespace
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            run(["ip", "netns", "delete", self.netns], timeout=30, check=False)
            self._netns_made = False
        if self.rootfs.exists():
            build.remove_tree(self.rootfs)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def container(work: Path, name: str, parts: Parts, files: dict[str, str]) -> Iterator[Container]:
    """A booted container with ``files`` written into its tree first; closed however the block ends."""
    box = Container(work, name, parts)
    try:
        box.create(files)
        box.boot()
        yield box
    finally:
        box.close()


def yaml_file(data: dict[str, Any]) -> str:
    """A config file's text."""
    return yaml.safe_dump(data, sort_keys=True)


class Uplink:
    """A network namespace of its own for the test's master, joined to a container's by a veth pair.

    The container's end is ``device`` (its address set by the container's own network config), the
    master's end holds ``master_cidr``: the agent then reaches the master through a real device
    that a bridge state can move, and a wrong address on it really cuts the agent off. Both
    namespaces are the test's own; ``close()`` deletes this one (the veth goes with it).
    """

    def __init__(self, name: str, box: Container, device: str, master_cidr: str) -> None:
        self.netns = name
        self.box = box
        self.device = device
        self.master_cidr = master_cidr
        self._made = False

    @property
    def master_ip(self) -> str:
        """The master's address on the link."""
        return self.master_cidr.split("/")[0]

    def make(self) -> None:
        """The namespace, the veth pair, and the master's end addressed and up (call after box.create)."""
        run(["ip", "netns", "add", self.netns], timeout=30)
        self._made = True
        run(["ip", "-n", self.netns, "link", "set", "lo", "up"], timeout=30)
        peer = f"{self.device}-m"
        run(["ip", "-n", self.box.netns, "link", "add", self.device, "type", "veth", "peer", "name", peer,
             "netns", self.netns], timeout=30)
        run(["ip", "-n", self.netns, "addr", "add", self.master_cidr, "dev", peer], timeout=30)
        run(["ip", "-n", self.netns, "link", "set", peer, "up"], timeout=30)

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` run in the master's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def close(self) -> None:
        """Kill what runs in the namespace (only the test's master) and delete it."""
        if not self._made:
            return
        for pid in run(["ip", "netns", "pids", self.netns], timeout=30, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        run(["ip", "netns", "delete", self.netns], timeout=30, check=False)
        self._made = False


def networkd_file(device: str, cidr: str) -> dict[str, str]:
    """The operator's own networkd file giving ``device`` the address ``cidr`` (enable networkd after boot)."""
    return {"/etc/systemd/network/20-uplink.network": f"[Match]\nName={device}\n\n[Network]\nAddress={cidr}\n"}
