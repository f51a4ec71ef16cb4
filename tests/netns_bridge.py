"""A network namespace the test makes, holding a bridge ``br0`` with DHCP, and the daemons that must live there.

For real guests on the default NIC (virtio, bridged to br0) without touching the machine's own network:
``NetnsBridge`` makes a namespace with loopback up and ``br0`` at ``ADDRESS``/24, and runs dnsmasq there
for DHCP only (``--port=0``: no DNS). Nothing connects it to the machine's namespace (no veth, no route),
so a guest on br0 reaches only what runs inside: the master bound to ``ADDRESS`` (``NetnsCluster``) and,
for migrations, the libvirtds' loopback listeners. Everything is started with ``ip netns exec``, which
also gives the process a /sys of the namespace (libvirt reads the bridge there).

Unix sockets are not per network namespace, so libvirtd's /run/libvirt socket and the master's control
socket work from the test process outside it: ``virsh``, the CLI and libvirt-python need no ``ip netns exec``.

* ``NetnsLibvirtd``: the system virtlogd + libvirtd started inside the namespace (QEMU's taps land on its
  br0). Like ``realvirt.RealLibvirtd`` it stops only what it started; it refuses to run beside any other
  system libvirtd (``twohosts.OtherLibvirtdRunning``), because there is only one /run/libvirt.
* ``TwoHypervisors(..., launcher=bridge.exec_prefix)`` (tests/twohosts.py) runs both hypervisors there.
* ``NetnsCluster``: a ``cluster.Cluster`` whose master and agents run inside, the master on br0's address.

``stop()`` (or leaving the ``with``) ends dnsmasq, kills whatever else a test left running in the namespace
(only processes inside it, all of them the test's own) and deletes the namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from .cluster import BIN, Cluster, Daemon, wait_until
from .realvirt import (
    LIBVIRTD,
    LIBVIRTD_PIDFILE,
    LIBVIRTD_SOCK,
    START_TIMEOUT,
    TEST_PREFIX,
    VIRTLOGD,
    VIRTLOGD_PIDFILE,
    VIRTLOGD_SOCK,
    LibvirtdError,
    RealLibvirtd,
    _pidfile_pid,
    _socket_answers,
    wait_for_daemon,
)
from .twohosts import OtherLibvirtdRunning

IP = "/usr/sbin/ip"
DNSMASQ = "/usr/sbin/dnsmasq"
BRIDGE_TOOL = "/usr/sbin/bridge"
CLOSED_PORT = 9  # discard: nothing listens on it in the guest image
BRIDGE = "br0"  # the name the default NIC profile bridges to
# Any range will do: it exists only inside the namespace.
ADDRESS = "10.151.0.1"
PREFIX_LENGTH = 24
DHCP_RANGE = ("10.151.0.100", "10.151.0.199")
DNSMASQ_READY_TIMEOUT = 10.0  # it is up in ~0.05 s
STOP_TIMEOUT = 10.0


class NetnsBridge:
    """A fresh network namespace with ``br0`` at ``ADDRESS`` and dnsmasq serving DHCP on it."""

    def __init__(self, scratch: Path) -> None:
        self.name = f"{TEST_PREFIX}{uuid.uuid4().hex[:8]}"
        self.scratch = scratch
        self.address = ADDRESS
        self.bridge = BRIDGE
        self.exec_prefix = [IP, "netns", "exec", self.name]  # run a command inside
        self.leases_path = scratch / "dnsmasq.leases"
        self.log_path = scratch / "dnsmasq.log"
        self.dnsmasq: subprocess.Popen[bytes] | None = None
        self._created = False

    def __repr__(self) -> str:
        return f"<NetnsBridge {self.name} {self.bridge} {self.address}/{PREFIX_LENGTH}>"

    def start(self) -> NetnsBridge:
        """Make the namespace, the bridge and its address, and start dnsmasq; undone on any failure."""
        for exe in (IP, DNSMASQ):
            if not os.access(exe, os.X_OK):
                raise LibvirtdError(f"{exe} is missing: run scripts/install-libvirtd.sh (iproute2, dnsmasq-base)")
        try:
            self.scratch.mkdir(parents=True, exist_ok=True)
            self._make_namespace()
            self._start_dnsmasq()
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        return self

    def _make_namespace(self) -> None:
        _ip("netns", "add", self.name)
        self._created = True
        for args in (("link", "set", "lo", "up"), ("link", "add", BRIDGE, "type", "bridge"),
                     ("addr", "add", f"{ADDRESS}/{PREFIX_LENGTH}", "dev", BRIDGE), ("link", "set", BRIDGE, "up")):
            _ip("-n", self.name, *args)

    def _start_dnsmasq(self) -> None:
        """DHCP only, bound to br0 alone, with its leases and log in the scratch directory."""
        argv = [*self.exec_prefix, DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                f"--interface={BRIDGE}", "--bind-interfaces", "--except-interface=lo",
                f"--dhcp-range={DHCP_RANGE[0]},{DHCP_RANGE[1]},1h", "--dhcp-authoritative",
                f"--dhcp-leasefile={self.leases_path}", f"--log-facility={self.log_path}", "--log-dhcp",
                "--user=root"]  # the lease file and log live in the test's scratch directory
        with (self.scratch / "dnsmasq.out").open("wb") as out:  # start-up errors, before its log is open
            self.dnsmasq = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_until(self._dnsmasq_ready, timeout=DNSMASQ_READY_TIMEOUT, what="dnsmasq to serve DHCP on br0")

    def _dnsmasq_ready(self) -> bool:
        assert self.dnsmasq is not None
        if self.dnsmasq.poll() is not None:
            said = (self.scratch / "dnsmasq.out").read_text(errors="replace").strip()
            raise LibvirtdError(f"dnsmasq exited {self.dnsmasq.returncode}: {said}\n{self.log()}")
        return "DHCP, IP range" in self.log()

    def log(self) -> str:
        """What dnsmasq logged (its DHCP exchanges included)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def leases(self) -> list[dict[str, str]]:
        """dnsmasq's current leases: mac, ip and hostname (``*`` when the client sent none)."""
        try:
            lines = self.leases_path.read_text().splitlines()
        except OSError:
            return []
        return [{"mac": f[1], "ip": f[2], "hostname": f[3]} for f in (line.split() for line in lines) if len(f) >= 4]

    def ports(self) -> list[str]:
        """The interfaces enslaved to br0 (a running guest's tap, vnetN)."""
        out = _ip("-n", self.name, "-o", "link", "show", "master", BRIDGE)
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]

    def fdb(self) -> str:
        """br0's forwarding database (which port each MAC was last seen on), for a failure's report."""
        return self.run(BRIDGE_TOOL, "fdb", "show", "br", BRIDGE).stdout

    def kernel_answers(self, address: str) -> str:
        """Whether a host on br0 answers at all, agent or not (this machine has no ping): a TCP SYN to a port
        nothing listens on gets the kernel's reset, "Connection refused"; an unreachable or hung guest gives
        "No route to host" (no ARP answer) or, after 3 s, "Resource temporarily unavailable"."""
        probe = (f"import socket, os; s = socket.socket(); s.settimeout(3); "
                 f"print(os.strerror(s.connect_ex(({address!r}, {CLOSED_PORT}))))")
        done = self.run("/usr/bin/python3", "-c", probe)
        return (done.stdout + done.stderr).strip()

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a short command inside the namespace (bounded), whatever its exit status."""
        return subprocess.run([*self.exec_prefix, *argv], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=30, check=False)

    def pids(self) -> list[int]:
        """Every process running inside the namespace."""
        if not self._created:
            return []
        return [int(p) for p in _ip("netns", "pids", self.name).split()]

    def stop(self) -> None:
        """End dnsmasq, kill anything else left inside the namespace, delete it; LibvirtdError lists leftovers."""
        errors = []
        if self.dnsmasq is not None:
            _end(self.dnsmasq)
            self.dnsmasq = None
        if self._created:
            left = self.pids()
            for pid in left:  # only processes inside the test's own namespace: the test started them
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if left:
                errors.append(f"processes left running in {self.name} (killed): {_describe(left)}")
            try:
                _ip("netns", "delete", self.name)
            except LibvirtdError as e:
                errors.append(str(e))
            self._created = False
        if errors:
            raise LibvirtdError("; ".join(errors))

    def __enter__(self) -> NetnsBridge:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class NetnsLibvirtd(RealLibvirtd):
    """virtlogd + the system libvirtd started inside ``bridge``'s namespace (``qemu:///system`` from anywhere)."""

    def __init__(self, bridge: NetnsBridge) -> None:
        super().__init__()
        self.bridge = bridge

    def start(self) -> NetnsLibvirtd:
        """Start both daemons inside; OtherLibvirtdRunning if any system libvirtd already runs (not ours)."""
        pid = _pidfile_pid(LIBVIRTD_PIDFILE, "libvirtd")
        if pid is not None or _socket_answers(LIBVIRTD_SOCK):
            raise OtherLibvirtdRunning(f"a libvirtd (pid {pid or 'unknown'}) already serves {LIBVIRTD_SOCK}: "
                                       f"one inside {self.bridge.name} cannot run beside it")
        self._fix_kvm_permissions()
        try:
            if _pidfile_pid(VIRTLOGD_PIDFILE, "virtlogd") is None and not _socket_answers(VIRTLOGD_SOCK):
                self.started_virtlogd = self._start_inside(VIRTLOGD, VIRTLOGD_PIDFILE, VIRTLOGD_SOCK, "virtlogd")
            self.started_libvirtd = self._start_inside(LIBVIRTD, LIBVIRTD_PIDFILE, LIBVIRTD_SOCK, "libvirtd")
            self._warm_up()
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        return self

    def _start_inside(self, exe: str, pidfile: Path, sock: Path, comm: str) -> int:
        """``ip netns exec NS exe -d``, then wait (bounded) until its socket answers; the daemon's pid."""
        # Output to a file, not a pipe: a pipe the daemon inherited would keep run() waiting for EOF.
        with tempfile.TemporaryFile() as out:
            proc = subprocess.run([*self.bridge.exec_prefix, exe, "-d"], stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=START_TIMEOUT, check=False,
                                  start_new_session=True)
            out.seek(0)
            said = out.read().decode(errors="replace").strip()
        if proc.returncode != 0:
            raise LibvirtdError(f"{exe} -d in {self.bridge.name} exited {proc.returncode}: {said}")
        pid, answered = wait_for_daemon(pidfile, sock, comm)
        if pid is not None:
            setattr(self, f"started_{comm}", pid)  # known to us from now on: stop() ends it
        if not answered or pid is None:
            raise LibvirtdError(f"{comm} in {self.bridge.name} did not answer on {sock} within {START_TIMEOUT:.0f} s")
        return pid

    def stop(self) -> None:
        """Undefine the test's domains (their definitions live in the real /etc/libvirt), then stop as
        RealLibvirtd does: running domains destroyed, then the daemons."""
        errors = []
        if self.started_libvirtd is not None and _socket_answers(LIBVIRTD_SOCK):
            try:
                self.remove_test_domains(TEST_PREFIX)
            except Exception as e:  # keep going: the daemons must still be stopped
                errors.append(f"removing test domains: {e}")
        try:
            super().stop()
        except LibvirtdError as e:
            errors.append(str(e))
        if errors:
            raise LibvirtdError("; ".join(errors))

    def __enter__(self) -> NetnsLibvirtd:
        return self.start()


class NetnsCluster(Cluster):
    """A Cluster whose master (bound to br0's address) and agents run inside ``bridge``'s namespace."""

    def __init__(self, base: Path, bridge: NetnsBridge, **master_settings: Any) -> None:
        super().__init__(base, **{"interface": bridge.address, **master_settings})
        self.bridge = bridge
        self.master.argv[:0] = bridge.exec_prefix

    def agent_config(self, agent_id: str, **settings: Any) -> Path:
        """As Cluster's, with the master reached at br0's address (the only one it listens on)."""
        return super().agent_config(agent_id, **{"master": self.bridge.address, **settings})

    def start_agent(self, agent_id: str, **settings: Any) -> Daemon:
        """Start an agent process inside the namespace (its key stays pending until accepted)."""
        config_dir = self.agent_config(agent_id, **settings)
        daemon = Daemon(agent_id, config_dir,
                        [*self.bridge.exec_prefix, str(BIN / "saltmarsh-agent"), "-c", str(config_dir)])
        daemon.start()
        self.agents[agent_id] = daemon
        return daemon


def _ip(*args: str) -> str:
    proc = subprocess.run([IP, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                          check=False)
    if proc.returncode != 0:
        raise LibvirtdError(f"ip {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _end(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _describe(pids: list[int]) -> str:
    names = []
    for pid in pids:
        try:
            names.append(f"{Path(f'/proc/{pid}/comm').read_text().strip()} ({pid})")
        except OSError:
            names.append(str(pid))
    return ", ".join(names)
