"""Two real libvirtd "hypervisors" on one machine, each listening for libvirt TLS on loopback.

For tests of live migration between hypervisors (see /work/shared/libvirt-real.md, "Live migration on one
machine" and "TLS"). ``TwoHypervisors`` starts:

* **hv-a**: the system libvirtd in the machine's own namespaces (its normal socket /run/libvirt/libvirt-sock,
  local URI ``qemu:///system``, the machine's hostname, /var/lib/libvirt and /etc/libvirt as they are),
  started with ``libvirtd -d -l -f <scratch>/hv-a/libvirtd.conf``: host_uuid 11111111-..., TLS on
  127.0.0.1:16514, no TCP, auth_tls "none". A virtlogd is started too unless one already runs.
* **hv-b**: a second libvirtd + virtlogd in a private mount+UTS namespace (``unshare -m -u``): hostname
  ``saltmarsh-hv-b``, host_uuid 22222222-..., and private /run/libvirt, /var/lib/libvirt, /var/cache/libvirt,
  /var/log/libvirt and /etc/libvirt bind-mounted from ``<scratch>/hv-b`` (copies of the machine's, without
  domain definitions or autostart links). Only /var/lib/libvirt/images is the machine's real directory in
  both, so disk images made with ``realvirt.make_image_dir()`` are shared storage. TLS on 127.0.0.2:16514
  (both daemons share the network namespace, so they differ by loopback address, not port). Local URI
  ``qemu+unix:///system?socket=<scratch>/hv-b/run/libvirt-sock``.

The namespace needs no cleanup of its own: it vanishes when its last process (libvirtd, virtlogd, QEMU) exits.

**The rule: TwoHypervisors replaces the plain system libvirtd; it never runs beside it.** hv-a *is* the system
libvirtd (same socket, pidfile /run/libvirtd.pid, same /var/lib/libvirt), only with TLS and its own
host_uuid. ``start()`` raises ``OtherLibvirtdRunning`` if any libvirtd already answers on
/run/libvirt/libvirt-sock (or its pidfile names a live libvirtd), or if a TLS address is taken. A plain
daemon that a ``realvirt.RealLibvirtd`` of this process started can be stopped for the duration with
``plain_libvirtd_paused()`` and is started again afterwards (tests/integration/conftest.py does this, so the
session-wide ``real_libvirtd`` fixture and the ``two_hypervisors`` fixture never overlap).
``stop()`` stops only what ``start()`` started (running domains on both hosts are destroyed first, because
QEMU outlives libvirtd; test domains are undefined on hv-a, whose definitions live in the real /etc/libvirt),
with bounded waits, and removes the scratch directory.

With ``etc_pki=True`` each daemon runs in a private mount namespace (hv-a too, then) in which its host's pki
directory is bind-mounted at /etc/pki, and libvirtd.conf names no certificate files: libvirtd uses libvirt's
default locations, as a production host with the agent's default ``pki_root`` does. That is what
``virt-admin server-update-tls`` needs: libvirt reloads TLS files from the defaults only, never from
``key_file``/``cert_file``/``ca_file``/``crl_file``. hv-a's sockets stay in the real /run/libvirt. (/etc/pki is
created as an empty mount point if the machine has none, and removed again.)

With ``launcher`` (a command prefix such as ``ip netns exec NS``, see tests/netns_bridge.py) every daemon
is started through it, so both hypervisors and their QEMUs live in that network namespace: their TLS
listeners on 127.0.0.1 / 127.0.0.2 are that namespace's loopback, and the TLS check at start runs ``virsh``
through the launcher too.

``unprivileged_userfaultfd()`` lets QEMU (running as libvirt-qemu) use userfaultfd, which post-copy migration
needs on the target: QEMU 7.2 knows no /dev/userfaultfd, and the sysctl is 0 by default.

Each host needs a directory laid out like libvirt's /etc/pki (see ``HostPki``; ``ThrowawayCa`` makes one):
the daemon serves with libvirt/servercert.pem (EKU serverAuth, SAN = the host's TLS address), and when it is
the *source* of a peer-to-peer migration it connects to the target as a TLS client with
libvirt/clientcert.pem (EKU clientAuth). Clients pass a flat ``pkipath`` directory (cacert.pem,
clientcert.pem, clientkey.pem); ``Hypervisor.client_pkipath`` is such a copy of the host's client side.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from .realvirt import (
    IMAGES_DIR,
    LIBVIRTD,
    LIBVIRTD_PIDFILE,
    LIBVIRTD_SOCK,
    REAP_TIMEOUT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    TEST_PREFIX,
    VIRTLOGD,
    VIRTLOGD_PIDFILE,
    VIRTLOGD_SOCK,
    LibvirtdError,
    RealLibvirtd,
    _pid_alive,
    _pidfile_pid,
    _socket_answers,
    running_plain_daemons,
    wait_for_daemon,
)
from .throwaway_ca import HostPki as HostPki
from .throwaway_ca import ThrowawayCa as ThrowawayCa

HV_A_UUID = "11111111-1111-4111-8111-111111111111"
HV_B_UUID = "22222222-2222-4222-8222-222222222222"
HV_B_HOSTNAME = "saltmarsh-hv-b"
TLS_PORT = 16514  # libvirt's default: URIs need no port
HV_A_ADDRESS = "127.0.0.1"
HV_B_ADDRESS = "127.0.0.2"
SCRATCH_PREFIX = "saltmarsh-twohosts-"
ETC_PKI = Path("/etc/pki")
USERFAULTFD_SYSCTL = Path("/proc/sys/vm/unprivileged_userfaultfd")
TLS_CHECK_TIMEOUT = 5.0  # a TLS connect on loopback takes ~0.03 s
# The private copies of hv-b: (name under <scratch>/hv-b, mount point).
PRIVATE_DIRS = (("run", "/run/libvirt"), ("varlib", "/var/lib/libvirt"), ("cache", "/var/cache/libvirt"),
                ("log", "/var/log/libvirt"), ("etc", "/etc/libvirt"))


class OtherLibvirtdRunning(LibvirtdError):
    """A libvirtd that TwoHypervisors did not start holds the system socket or a TLS address."""


# ----- certificates ------------------------------------------------------------------------------


def _port_free(address: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
    except OSError:
        return False
    finally:
        s.close()
    return True


def _conf_str(value: str | Path) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Hypervisor(RealLibvirtd):
    """One of the two libvirtds: where it listens, how to reach it, and what it started.

    Reuses RealLibvirtd's connection, warm-up, domain clean-up and daemon stopping; ``start()`` is
    ``TwoHypervisors.start()``'s business.
    """

    def __init__(self, name: str, *, address: str, host_uuid: str, pki: HostPki, scratch: Path,
                 namespaced: bool, hostname: str | None = None, crl_file: Path | None = None,
                 tls_port: int = TLS_PORT, etc_pki: bool = False) -> None:
        super().__init__()
        self.etc_pki = etc_pki  # the daemon sees pki.root at /etc/pki and uses libvirt's default file names
        self.name = name
        self.address = address
        self.tls_port = tls_port
        self.host_uuid = host_uuid
        self.pki = pki
        self.crl_file = crl_file
        self.scratch = scratch  # <scratch>/<name>
        self.namespaced = namespaced
        self.hostname = hostname or socket.gethostname()
        self.conf = scratch / "libvirtd.conf"
        self.log_path = scratch / "libvirtd.log"  # warnings and errors (TLS refusals land here)
        self.client_pkipath = scratch / "client-pki"  # flat pkipath of this host's client certificate
        if namespaced:
            self.run_dir = scratch / "run"  # what the namespace sees as /run/libvirt
            self.sock = self.run_dir / "libvirt-sock"
            self.uri = f"qemu+unix:///system?socket={self.sock}"
            self.libvirtd_pidfile = scratch / "libvirtd.pid"
            self.virtlogd_pidfile = scratch / "virtlogd.pid"
        else:
            self.run_dir = LIBVIRTD_SOCK.parent
            self.sock = LIBVIRTD_SOCK
            self.uri = "qemu:///system"
            self.libvirtd_pidfile = LIBVIRTD_PIDFILE
            self.virtlogd_pidfile = VIRTLOGD_PIDFILE

    def __repr__(self) -> str:
        return f"<Hypervisor {self.name} {self.address}:{self.tls_port} {self.uri}>"

    @property
    def host_port(self) -> str:
        return self.address if self.tls_port == TLS_PORT else f"{self.address}:{self.tls_port}"

    def tls_uri(self, pkipath: Path | None = None) -> str:
        """``qemu+tls://<address>/system``, with ``?pkipath=`` (a flat client cert dir) if given.

        As the ``dconnuri`` of a peer-to-peer migration, it is the *source* libvirtd that opens it, so
        ``pkipath`` must be the source host's client credentials (``src.client_pkipath``)."""
        uri = f"qemu+tls://{self.host_port}/system"
        return uri + (f"?pkipath={quote(str(pkipath))}" if pkipath else "")

    @property
    def migration_uri(self) -> str:
        """VIR_MIGRATE_PARAM_URI for a native (non-tunnelled) migration *to* this host.

        Without it the target offers tcp://<its hostname>:<port>, and hv-b's hostname resolves nowhere."""
        return f"tcp://{self.address}"

    def qemu_pid(self, domain: str) -> int | None:
        """The pid of ``domain``'s QEMU on this host (from its /run/libvirt/qemu pidfile), if it runs."""
        return _pidfile_pid(self.run_dir / "qemu" / f"{domain}.pid", "qemu-system-x86")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_since(0)[-chars:]

    def log_size(self) -> int:
        """The log's current length: pass it to ``log_since`` to see what the daemon says from now on."""
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def write_conf(self) -> None:
        lines = [
            f"host_uuid = {_conf_str(self.host_uuid)}",
            "listen_tls = 1",
            "listen_tcp = 0",
            f"tls_port = {_conf_str(str(self.tls_port))}",
            f"listen_addr = {_conf_str(self.address)}",
            'auth_tls = "none"',
            f"log_outputs = {_conf_str('3:file:' + str(self.log_path))}",
        ]
        if not self.etc_pki:  # else libvirt's defaults under /etc/pki, the CRL included when it exists
            lines += [f"key_file = {_conf_str(self.pki.server_key)}", f"cert_file = {_conf_str(self.pki.server_cert)}",
                      f"ca_file = {_conf_str(self.pki.ca_cert)}"]
        if self.crl_file is not None and not self.etc_pki:
            lines.append(f"crl_file = {_conf_str(self.crl_file)}")
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> Hypervisor:
        raise LibvirtdError("a Hypervisor is started by TwoHypervisors.start()")

    def stop(self) -> None:
        """Undefine test domains (hv-a's definitions are in the real /etc/libvirt), destroy running ones,
        stop the daemons this object started."""
        errors = []
        if self.started_libvirtd is not None and _pid_alive(self.started_libvirtd):
            try:
                self.remove_test_domains(TEST_PREFIX)
            except Exception as e:
                errors.append(f"{self.name}: removing test domains: {e}")
        try:
            super().stop()
        except LibvirtdError as e:
            errors.append(f"{self.name}: {e}")
        if errors:
            raise LibvirtdError("; ".join(errors))


class TwoHypervisors:
    """hv-a (system namespaces, TLS on 127.0.0.1) and hv-b (private mount+UTS namespace, TLS on 127.0.0.2).

    ``pki_a`` / ``pki_b``: directories laid out like /etc/pki (see ``HostPki``); ``crl_a`` / ``crl_b``: optional
    CRL files for the daemons' ``crl_file``; ``launcher``: a command prefix every daemon is started through
    (``ip netns exec NS``). Use as a context manager or call start()/stop().
    """

    def __init__(self, pki_a: Path, pki_b: Path, *, crl_a: Path | None = None, crl_b: Path | None = None,
                 scratch_parent: Path | None = None, etc_pki: bool = False, launcher: Sequence[str] = ()) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=scratch_parent))
        self.scratch.chmod(0o755)
        self.a = Hypervisor("hv-a", address=HV_A_ADDRESS, host_uuid=HV_A_UUID, pki=HostPki(Path(pki_a)),
                            scratch=self.scratch / "hv-a", namespaced=False, crl_file=crl_a, etc_pki=etc_pki)
        self.b = Hypervisor("hv-b", address=HV_B_ADDRESS, host_uuid=HV_B_UUID, pki=HostPki(Path(pki_b)),
                            scratch=self.scratch / "hv-b", namespaced=True, hostname=HV_B_HOSTNAME, crl_file=crl_b,
                            etc_pki=etc_pki)
        self.etc_pki = etc_pki
        self.launcher = list(launcher)
        self._made_etc_pki = False  # /etc/pki created as a mount point by start(), removed by stop()
        self.timings: dict[str, float] = {}

    @property
    def hosts(self) -> tuple[Hypervisor, Hypervisor]:
        return (self.a, self.b)

    def other(self, hv: Hypervisor) -> Hypervisor:
        return self.b if hv is self.a else self.a

    @staticmethod
    def dest_uri(src: Hypervisor, dst: Hypervisor) -> str:
        """The ``dconnuri`` for a peer-to-peer migration src -> dst: dst's TLS URI with src's client certs."""
        return dst.tls_uri(src.client_pkipath)

    # ----- start -------------------------------------------------------------------------------

    def start(self) -> TwoHypervisors:
        t0 = time.monotonic()
        try:  # on any failure, stop() what was started and remove the scratch directory
            reason = RealLibvirtd.skip_reason()
            if reason:
                raise LibvirtdError(reason)
            if os.geteuid() != 0:
                raise LibvirtdError("TwoHypervisors needs root (it starts the system libvirtd and uses unshare -m)")
            for exe in (LIBVIRTD, VIRTLOGD, "/usr/bin/unshare", "/usr/bin/qemu-system-x86_64", "/usr/bin/qemu-img"):
                if not os.access(exe, os.X_OK):
                    raise LibvirtdError(f"{exe} is missing: run scripts/install-libvirtd.sh")
            self._check_nothing_else_runs()
            self.a._fix_kvm_permissions()
            if self.etc_pki and not ETC_PKI.exists():
                ETC_PKI.mkdir(mode=0o755)
                self._made_etc_pki = True
            IMAGES_DIR.mkdir(parents=True, exist_ok=True)
            for hv in self.hosts:
                hv.scratch.mkdir(mode=0o755)
                hv.write_conf()
                hv.pki.write_pkipath(hv.client_pkipath)
            self._prepare_b()
            self.timings["prepare"] = time.monotonic() - t0
            self._start_a()
            self.a._warm_up()  # fills the machine's QEMU capabilities cache (~4-8 s if cold) ...
            self.timings["hv-a"] = time.monotonic() - t0
            # ... which hv-b then gets a copy of, instead of probing QEMU again.
            _run(["cp", "-a", "/var/cache/libvirt", str(self.b.scratch / "cache")], "copying /var/cache/libvirt")
            self._start_b()
            self.b._warm_up()
            self.timings["hv-b"] = time.monotonic() - t0 - self.timings["hv-a"]
            for hv in self.hosts:
                self._check_tls(hv)
            self.timings["start"] = time.monotonic() - t0
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        return self

    def _check_nothing_else_runs(self) -> None:
        pid = _pidfile_pid(LIBVIRTD_PIDFILE, "libvirtd")
        if pid is not None or _socket_answers(LIBVIRTD_SOCK):
            raise OtherLibvirtdRunning(
                f"a libvirtd (pid {pid or 'unknown'}) already serves {LIBVIRTD_SOCK}; TwoHypervisors replaces the "
                "system libvirtd and needs it stopped (realvirt.RealLibvirtd ones: plain_libvirtd_paused())")
        for hv in self.hosts:
            if not _port_free(hv.address, hv.tls_port):
                raise OtherLibvirtdRunning(
                    f"{hv.address}:{hv.tls_port} is already in use (a libvirtd left from an earlier run? "
                    "see `pgrep -a libvirtd`)")

    def _prepare_b(self) -> None:
        """hv-b's private /run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt, /etc/libvirt."""
        d = self.b.scratch
        (d / "run").mkdir(mode=0o755)
        (d / "log").mkdir(mode=0o755)
        (d / "log" / "qemu").mkdir(mode=0o755)
        (d / "varlib").mkdir(mode=0o755)
        for mount_point in ("/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt",
                            "/etc/libvirt"):
            Path(mount_point).mkdir(parents=True, exist_ok=True)
        # cp -a keeps owners (/var/lib/libvirt/qemu belongs to libvirt-qemu). The machine's images directory
        # is not copied: the namespace mounts the real one over varlib/images (shared storage).
        copies = [(p, d / "varlib" / p.name) for p in Path("/var/lib/libvirt").iterdir() if p.name != "images"]
        copies.append((Path("/etc/libvirt"), d / "etc"))  # /var/cache/libvirt: once hv-a has filled it
        for src, dst in copies:
            _run(["cp", "-a", str(src), str(dst)], f"copying {src} for hv-b")
        (d / "varlib" / "images").mkdir(mode=0o711)
        # No domains, networks or pools of the machine's (the main daemon would own them too).
        etc = d / "etc"
        for pattern in ("qemu/*.xml", "qemu/autostart/*", "qemu/networks/autostart/*", "storage/autostart/*"):
            for p in etc.glob(pattern):
                p.unlink()

    def _start_a(self) -> None:
        a = self.a
        if _pidfile_pid(VIRTLOGD_PIDFILE, "virtlogd") is None and not _socket_answers(VIRTLOGD_SOCK):
            _run_daemons([*self.launcher, VIRTLOGD, "-d"], "virtlogd (hv-a)")
            a.started_virtlogd = _wait_daemon(VIRTLOGD_PIDFILE, VIRTLOGD_SOCK, "virtlogd", a)
        argv = [LIBVIRTD, "-d", "-l", "-f", str(a.conf)]
        if a.etc_pki:  # its own mount namespace, only for /etc/pki: everything else is the machine's
            script = a.scratch / "inner.sh"
            script.write_text(f"#!/bin/bash\nset -eu\nmount --bind {a.pki.root} {ETC_PKI}\nexec {' '.join(argv)}\n")
            script.chmod(0o755)
            argv = ["unshare", "-m", "--propagation", "private", str(script)]
        _run_daemons([*self.launcher, *argv], "libvirtd (hv-a)", a)
        a.started_libvirtd = _wait_daemon(a.libvirtd_pidfile, a.sock, "libvirtd", a)

    def _start_b(self) -> None:
        b = self.b
        d = b.scratch
        script = ["set -eu", f"hostname {HV_B_HOSTNAME}",
                  f"mount --bind {IMAGES_DIR} {d / 'varlib' / 'images'}"]
        for name, mount_point in PRIVATE_DIRS:
            # rbind for /var/lib/libvirt so that the real images directory mounted just above comes along.
            script.append(f"mount {'--rbind' if name == 'varlib' else '--bind'} {d / name} {mount_point}")
        if b.etc_pki:
            script.append(f"mount --bind {b.pki.root} {ETC_PKI}")
        script += [f"{VIRTLOGD} -d -p {b.virtlogd_pidfile}",
                   f"{LIBVIRTD} -d -l -f {b.conf} -p {b.libvirtd_pidfile}"]
        (d / "inner.sh").write_text("#!/bin/bash\n" + "\n".join(script) + "\n")
        (d / "inner.sh").chmod(0o755)
        _run_daemons([*self.launcher, "unshare", "-m", "-u", "--propagation", "private", str(d / "inner.sh")],
                     "hv-b namespace", b,
                     # virtlogd is up before libvirtd starts, so record it even if libvirtd fails
                     on_failure=lambda: setattr(b, "started_virtlogd", _pidfile_pid(b.virtlogd_pidfile, "virtlogd")))
        b.started_virtlogd = _wait_daemon(b.virtlogd_pidfile, b.run_dir / "virtlogd-sock", "virtlogd", b)
        b.started_libvirtd = _wait_daemon(b.libvirtd_pidfile, b.sock, "libvirtd", b)

    def _check_tls(self, hv: Hypervisor) -> None:
        """Open hv's TLS URI with its own client certificate (retrying a bounded while, in case the listener is
        not up yet): proves the certificates work together and that it is the right host."""
        uri = hv.tls_uri(hv.client_pkipath)
        deadline = time.monotonic() + TLS_CHECK_TIMEOUT
        while True:
            try:
                name = self._tls_hostname(uri)
            except LibvirtdError as e:
                if time.monotonic() > deadline:
                    raise LibvirtdError(f"{hv.name}: {uri} fails: {e}; log:\n{hv.log_tail()}") from e
                time.sleep(0.1)
                continue
            if name != hv.hostname:
                raise LibvirtdError(f"{hv.name}: {uri} reached host {name!r}, not {hv.hostname!r}")
            return

    def _tls_hostname(self, uri: str) -> str:
        """The host name the libvirtd at ``uri`` reports, asked from where the daemons run (the launcher's
        namespace: its loopback is not this process's)."""
        if self.launcher:
            proc = subprocess.run([*self.launcher, "virsh", "-c", uri, "hostname"], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=TLS_CHECK_TIMEOUT + 10, check=False)
            if proc.returncode != 0:
                raise LibvirtdError(proc.stderr.strip())
            return proc.stdout.strip()
        import libvirt

        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise LibvirtdError(str(e)) from e
        try:
            return str(conn.getHostname())
        finally:
            conn.close()

    # ----- stop --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop only what start() started, then remove the scratch directory.

        Running domains on both hosts are destroyed (and test domains undefined) first, then all the daemons
        get SIGTERM at once and are waited for (SIGKILL after STOP_TIMEOUT)."""
        t0 = time.monotonic()
        errors = []
        for hv in self.hosts:
            if hv.started_libvirtd is not None and _pid_alive(hv.started_libvirtd):
                try:
                    hv.remove_test_domains(TEST_PREFIX)
                    hv._destroy_everything()
                except Exception as e:  # keep going: the daemons must still be stopped
                    errors.append(f"{hv.name}: destroying domains: {e}")
        pids = {}
        for hv in self.hosts:
            for attr, comm in (("started_libvirtd", "libvirtd"), ("started_virtlogd", "virtlogd")):
                pid = getattr(hv, attr)
                if pid is not None:
                    pids[pid] = f"{hv.name} {comm}"
                    setattr(hv, attr, None)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(_pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid, what in pids.items():
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                errors.append(f"{what} (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT:.0f} s and was killed")
        errors += self._kill_leftover_qemus()
        # Reparented to PID 1, which reaps them a little later: wait a bounded while (cosmetic).
        deadline = time.monotonic() + REAP_TIMEOUT
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self._made_etc_pki:
            with contextlib.suppress(OSError):  # still in use if a QEMU of ours survived
                ETC_PKI.rmdir()
            self._made_etc_pki = False
        self.timings["stop"] = time.monotonic() - t0
        if errors:
            raise LibvirtdError("; ".join(errors))

    def _kill_leftover_qemus(self) -> list[str]:
        """QEMUs outlive libvirtd: kill any our daemons left running (only if a daemon died before destroying
        its domains). All of hv-b's are ours; on hv-a only test domains' (the pidfiles are shared)."""
        errors = []
        for hv in self.hosts:
            for pidfile in sorted((hv.run_dir / "qemu").glob("*.pid")):
                if hv is self.a and not pidfile.stem.startswith(TEST_PREFIX):
                    continue
                pid = _pidfile_pid(pidfile, "qemu-system-x86")
                if pid is None:
                    continue
                errors.append(f"{hv.name}: QEMU of {pidfile.stem} (pid {pid}) outlived its libvirtd; killed")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return errors

    def __enter__(self) -> TwoHypervisors:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise LibvirtdError(f"{what}: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")


def _run_daemons(argv: list[str], what: str, hv: Hypervisor | None = None,
                 on_failure: Callable[[], None] | None = None) -> None:
    """Run a command that daemonises (returns once the daemons forked), bounded."""
    # Output to a file, not a pipe: a pipe the daemon inherited would keep run() waiting for EOF.
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=START_TIMEOUT, check=False, start_new_session=True)
        except subprocess.TimeoutExpired as e:
            raise LibvirtdError(f"{what}: {' '.join(argv)} did not return within {START_TIMEOUT:.0f} s") from e
        if proc.returncode != 0:
            if on_failure is not None:
                on_failure()
            out.seek(0)
            raise LibvirtdError(f"{what}: {' '.join(argv)} exited {proc.returncode}: "
                                f"{out.read().decode(errors='replace').strip()}"
                                + (f"\nlog:\n{hv.log_tail()}" if hv else ""))


def _wait_daemon(pidfile: Path, sock: Path, comm: str, hv: Hypervisor) -> int:
    """Wait (bounded) until ``pidfile`` names a live ``comm`` and ``sock`` answers; its pid."""
    pid, answered = wait_for_daemon(pidfile, sock, comm)
    if answered and pid is not None:
        return pid
    if pid is not None:
        # Known to us: let stop() end it.
        setattr(hv, "started_libvirtd" if comm == "libvirtd" else "started_virtlogd", pid)
    raise LibvirtdError(f"{hv.name}: {comm} (pid {pid}) did not answer on {sock} within {START_TIMEOUT:.0f} s"
                        f"; log:\n{hv.log_tail()}")


@contextlib.contextmanager
def unprivileged_userfaultfd() -> Iterator[None]:
    """vm.unprivileged_userfaultfd = 1 for the duration (post-copy migration needs it on the target), then as it was."""
    before = USERFAULTFD_SYSCTL.read_text().strip()
    USERFAULTFD_SYSCTL.write_text("1\n")
    try:
        yield
    finally:
        USERFAULTFD_SYSCTL.write_text(before + "\n")


@contextlib.contextmanager
def plain_libvirtd_paused() -> Iterator[list[RealLibvirtd]]:
    """Stop every plain system libvirtd that a ``realvirt.RealLibvirtd`` of this process started (destroying
    its running domains), and start it again afterwards. Yields the paused daemons (maybe none).

    A libvirtd started by someone else is left alone (TwoHypervisors.start() then raises
    OtherLibvirtdRunning)."""
    paused = running_plain_daemons()
    for daemon in paused:
        daemon.stop()
    try:
        yield paused
    finally:
        errors = []
        for daemon in paused:
            try:
                daemon.start()
            except LibvirtdError as e:
                errors.append(str(e))
        if errors:
            raise LibvirtdError("restarting the plain libvirtd: " + "; ".join(errors))
