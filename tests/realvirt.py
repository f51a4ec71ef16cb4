"""A real system libvirtd + QEMU for integration tests (no systemd needed).

``RealLibvirtd`` starts virtlogd and libvirtd (daemonised, as root) unless a libvirtd already answers on
/run/libvirt/libvirt-sock, waits until it answers, warms QEMU's capabilities cache, and on ``stop()`` stops
only what it started: first every running domain is destroyed (QEMU processes outlive libvirtd) and every
active network (dnsmasq), then libvirtd and virtlogd get SIGTERM and are waited for (SIGKILL after a bound).

``RealLibvirtd.skip_reason()`` says why this cannot run at all (neither root nor /dev/kvm); that is the only
case a test should skip on. Any other failure raises ``LibvirtdError``, meant to surface as a test error.

The packages come from scripts/install-libvirtd.sh (run by scripts/test.sh).
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import libvirt

URI = "qemu:///system"
LIBVIRTD = "/usr/sbin/libvirtd"
VIRTLOGD = "/usr/sbin/virtlogd"
LIBVIRTD_SOCK = Path("/run/libvirt/libvirt-sock")
LIBVIRTD_PIDFILE = Path("/run/libvirtd.pid")
VIRTLOGD_SOCK = Path("/run/libvirt/virtlogd-sock")
VIRTLOGD_PIDFILE = Path("/run/virtlogd.pid")
LIBVIRTD_LOG = Path("/var/log/libvirt/libvirtd.log")
IMAGES_DIR = Path("/var/lib/libvirt/images")
KVM_DEV = Path("/dev/kvm")
# Test-owned domains are named with this prefix; the fixture removes any a test left behind.
TEST_PREFIX = "saltmarsh-test-"

START_TIMEOUT = 30.0  # the socket answers in ~0.1 s
WARM_TIMEOUT = 120.0  # first QEMU capabilities probe ~4-8 s; a broken /dev/kvm makes it ~50 s per call
STOP_TIMEOUT = 15.0  # each daemon exits ~0.1-2 s after SIGTERM
REAP_TIMEOUT = 3.0  # waiting for PID 1 to reap the exited daemons (cosmetic, never an error)


def wait_for_daemon(pidfile: Path, sock: Path, comm: str) -> tuple[int | None, bool]:
    """Wait (bounded) until ``pidfile`` names a live ``comm`` and ``sock`` answers: (its pid or None, answered)."""
    deadline = time.monotonic() + START_TIMEOUT
    pid = None
    while time.monotonic() < deadline:
        pid = pid or _pidfile_pid(pidfile, comm)
        if pid is not None and _socket_answers(sock):
            return pid, True
        time.sleep(0.05)
    return pid, False


class LibvirtdError(RuntimeError):
    """The real libvirtd could not be started, used or stopped."""


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as gone (a daemon's parent may never reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] not in ("Z", "X")


def _pidfile_pid(path: Path, comm: str) -> int | None:
    """The pid in ``path`` if that process is alive and is ``comm``, else None."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _pid_alive(pid):
        return None
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != comm:
            return None
    except OSError:
        return None
    return pid


def _socket_answers(path: Path) -> bool:
    """True if something accepts connections on the unix socket ``path`` (a stale file does not)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
    except OSError:
        return False
    finally:
        s.close()
    return True


def _kvm_group_ok() -> bool:
    """True if /dev/kvm exists and group kvm can read and write it (QEMU runs as libvirt-qemu:kvm)."""
    try:
        st = KVM_DEV.stat()
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except (OSError, KeyError):
        return False
    return stat.S_ISCHR(st.st_mode) and (st.st_mode & 0o066 == 0o066 or (
        st.st_gid == kvm_gid and st.st_mode & 0o060 == 0o060))


_event_loop_lock = threading.Lock()
_event_loop_started = False


def ensure_event_loop() -> None:
    """Register libvirt's default event loop (once per process) and run it in a daemon thread.

    Must run before opening a connection on which events are wanted.
    """
    global _event_loop_started
    import libvirt

    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-event-loop", daemon=True).start()
        _event_loop_started = True


# Every RealLibvirtd of this process, so that tests/twohosts.py can pause the plain daemon (running_plain_daemons).
_instances: weakref.WeakSet[RealLibvirtd] = weakref.WeakSet()


def running_plain_daemons() -> list[RealLibvirtd]:
    """The plain RealLibvirtd objects (not subclasses) of this process whose own libvirtd still runs."""
    return [d for d in list(_instances)
            if type(d) is RealLibvirtd and d.started_libvirtd is not None and _pid_alive(d.started_libvirtd)]


class RealLibvirtd:
    """A running system libvirtd reachable at ``uri``; started here only if none was running."""

    uri = URI

    def __init__(self) -> None:
        _instances.add(self)
        self.started_libvirtd: int | None = None  # pids of the daemons this object started
        self.started_virtlogd: int | None = None
        self.domain_type = "qemu"  # 'kvm' once KVM is known to work for QEMU
        self.timings: dict[str, float] = {}

    # ----- why it cannot run -------------------------------------------------------------------

    @staticmethod
    def skip_reason() -> str | None:
        """Why real-libvirtd tests cannot run here at all, or None. Only 'no root and no /dev/kvm' qualifies."""
        if os.geteuid() != 0 and not KVM_DEV.exists():
            return f"real libvirtd tests need root or /dev/kvm: not root (euid {os.geteuid()}) and no /dev/kvm"
        return None

    # ----- start -------------------------------------------------------------------------------

    def start(self) -> RealLibvirtd:
        t0 = time.monotonic()
        reason = self.skip_reason()
        if reason:
            raise LibvirtdError(reason)
        if os.geteuid() == 0:
            self._fix_kvm_permissions()  # also helps a libvirtd started elsewhere: it re-checks per call
        running = _pidfile_pid(LIBVIRTD_PIDFILE, "libvirtd") is not None or _socket_answers(LIBVIRTD_SOCK)
        if not running:
            if os.geteuid() != 0:
                raise LibvirtdError(f"no libvirtd answers on {LIBVIRTD_SOCK} and only root can start the system one")
            for exe in (LIBVIRTD, VIRTLOGD, "/usr/bin/qemu-system-x86_64", "/usr/bin/qemu-img"):
                if not os.access(exe, os.X_OK):
                    raise LibvirtdError(f"{exe} is missing: run scripts/install-libvirtd.sh")
            try:
                if _pidfile_pid(VIRTLOGD_PIDFILE, "virtlogd") is None and not _socket_answers(VIRTLOGD_SOCK):
                    self.started_virtlogd = self._daemonise(VIRTLOGD, VIRTLOGD_PIDFILE, VIRTLOGD_SOCK, "virtlogd")
                self.started_libvirtd = self._daemonise(LIBVIRTD, LIBVIRTD_PIDFILE, LIBVIRTD_SOCK, "libvirtd")
            except BaseException:
                self._stop_daemons()
                raise
        else:
            deadline = time.monotonic() + START_TIMEOUT
            while not _socket_answers(LIBVIRTD_SOCK):
                if time.monotonic() > deadline:
                    raise LibvirtdError(
                        f"libvirtd runs but {LIBVIRTD_SOCK} did not answer within {START_TIMEOUT:.0f} s"
                    )
                time.sleep(0.05)
        self.timings["start"] = time.monotonic() - t0
        try:
            self._warm_up()
        except BaseException:
            self.stop()
            raise
        self.timings["warm"] = time.monotonic() - t0 - self.timings["start"]
        return self

    def _fix_kvm_permissions(self) -> None:
        """/dev/kvm is root:root 0600 on a fresh machine; QEMU (libvirt-qemu:kvm) then cannot use KVM and
        libvirtd re-probes QEMU on every call. Give it to group kvm before libvirtd starts."""
        if not KVM_DEV.exists() or _kvm_group_ok():
            return
        try:
            kvm_gid = grp.getgrnam("kvm").gr_gid
        except KeyError as e:
            raise LibvirtdError("group kvm does not exist: run scripts/install-libvirtd.sh") from e
        os.chown(KVM_DEV, -1, kvm_gid)
        os.chmod(KVM_DEV, 0o660)

    @staticmethod
    def _daemonise(exe: str, pidfile: Path, sock: Path, comm: str) -> int:
        """Run ``exe -d``, wait (bounded) until its socket answers, return the daemon's pid."""
        # Output to a file, not a pipe: a pipe the daemon inherited would keep run() waiting for EOF.
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.run(
                    [exe, "-d"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    timeout=START_TIMEOUT, check=False, start_new_session=True,
                )
            except subprocess.TimeoutExpired as e:
                raise LibvirtdError(f"{exe} -d did not return within {START_TIMEOUT:.0f} s") from e
            if proc.returncode != 0:
                out.seek(0)
                raise LibvirtdError(
                    f"{exe} -d exited {proc.returncode}: {out.read().decode(errors='replace').strip()}"
                    + (f" (see {LIBVIRTD_LOG})" if comm == "libvirtd" else "")
                )
        pid, answered = wait_for_daemon(pidfile, sock, comm)
        if answered and pid is not None:
            return pid
        if pid is not None:
            _terminate(pid, comm)
        raise LibvirtdError(f"{comm} started but {sock} did not answer within {START_TIMEOUT:.0f} s")

    def _warm_up(self) -> None:
        """Connect, choose the domain type and fill QEMU's capabilities cache (slow only the first time)."""
        import libvirt

        conn = self.open()
        try:
            kvm = _kvm_group_ok() and "<domain type='kvm'" in conn.getCapabilities()
            self.domain_type = "kvm" if kvm else "qemu"
            deadline = time.monotonic() + WARM_TIMEOUT
            result: list[BaseException | None] = []

            def probe() -> None:
                try:
                    conn.getDomainCapabilities(None, "x86_64", None, self.domain_type, 0)
                    result.append(None)
                except BaseException as e:
                    result.append(e)

            t = threading.Thread(target=probe, daemon=True)
            t.start()
            t.join(max(0.0, deadline - time.monotonic()))
            if not result:
                raise LibvirtdError(f"libvirtd domcapabilities ({self.domain_type}) took over {WARM_TIMEOUT:.0f} s")
            if isinstance(result[0], libvirt.libvirtError):
                raise LibvirtdError(f"libvirtd domcapabilities ({self.domain_type}) failed: {result[0]}")
            if result[0] is not None:
                raise result[0]
        finally:
            conn.close()

    # ----- use ---------------------------------------------------------------------------------

    def open(self) -> libvirt.virConnect:
        """A new connection to ``uri``; the caller closes it."""
        import libvirt

        try:
            return libvirt.open(self.uri)
        except libvirt.libvirtError as e:
            raise LibvirtdError(f"cannot connect to {self.uri}: {e}") from e

    @contextlib.contextmanager
    def connection(self) -> Iterator[libvirt.virConnect]:
        conn = self.open()
        try:
            yield conn
        finally:
            conn.close()

    def remove_test_domains(self, prefix: str = TEST_PREFIX) -> list[str]:
        """Destroy and undefine every domain named ``prefix``*; returns their names."""
        import libvirt

        removed = []
        with self.connection() as conn:
            for dom in conn.listAllDomains(0):
                if not dom.name().startswith(prefix):
                    continue
                removed.append(dom.name())
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isPersistent():
                        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                                          | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        return removed

    # ----- stop --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop only what start() started: running domains and active networks first, then the daemons."""
        t0 = time.monotonic()
        errors: list[str] = []
        if self.started_libvirtd is not None and _pid_alive(self.started_libvirtd):
            try:
                self._destroy_everything()
            except Exception as e:  # keep going: the daemons must still be stopped
                errors.append(f"destroying domains/networks: {e}")
        errors += self._stop_daemons()
        self.timings["stop"] = time.monotonic() - t0
        if errors:
            raise LibvirtdError("; ".join(errors))

    def _destroy_everything(self) -> None:
        import libvirt

        with self.connection() as conn:
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
            for net in conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):
                    net.destroy()
            left = [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)]
        if left:
            raise LibvirtdError(f"domains still running after destroy: {left}")

    def _stop_daemons(self) -> list[str]:
        errors = []
        stopped = []
        for attr, comm in (("started_libvirtd", "libvirtd"), ("started_virtlogd", "virtlogd")):
            pid = getattr(self, attr)
            if pid is None:
                continue
            err = _terminate(pid, comm)
            if err:
                errors.append(err)
            stopped.append(pid)
            setattr(self, attr, None)
        # The daemons were reparented to PID 1, which reaps them a little later (~2 s here); wait a
        # bounded while so that `pgrep libvirtd` right after the session shows no <defunct> entry.
        deadline = time.monotonic() + REAP_TIMEOUT
        while any(Path(f"/proc/{pid}").exists() for pid in stopped) and time.monotonic() < deadline:
            time.sleep(0.05)
        return errors

    def __enter__(self) -> RealLibvirtd:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _terminate(pid: int, comm: str) -> str | None:
    """SIGTERM ``pid``, wait up to STOP_TIMEOUT, then SIGKILL; an error string if it needed SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return None
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return f"{comm} (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT:.0f} s and was killed"


# ----- disk images -------------------------------------------------------------------------------


def make_image_dir() -> Path:
    """A fresh directory under /var/lib/libvirt/images that QEMU (libvirt-qemu) can reach."""
    path = IMAGES_DIR / f"{TEST_PREFIX}{uuid.uuid4().hex[:12]}"
    path.mkdir(parents=True, mode=0o755)
    path.chmod(0o755)  # mkdir's mode is masked by the umask
    return path


def remove_image_dir(path: Path) -> None:
    if path.parent == IMAGES_DIR and path.name.startswith(TEST_PREFIX):
        shutil.rmtree(path, ignore_errors=True)


def blank_qcow2(path: Path | str, size: str = "64M") -> Path:
    """Create an empty qcow2 image at ``path`` with qemu-img."""
    path = Path(path)
    proc = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(path), size],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
    )
    if proc.returncode != 0:
        raise LibvirtdError(f"qemu-img create {path} failed: {proc.stderr.strip()}")
    path.chmod(0o644)
    return path


@contextlib.contextmanager
def libvirtd_with_image_dir(domain_prefix: str = TEST_PREFIX) -> Iterator[tuple[RealLibvirtd, Path]]:
    """The system libvirtd (started unless one runs) and a fresh image directory QEMU can reach.

    On exit the domains named ``domain_prefix...`` are removed, then the directory, then libvirtd is
    stopped if it was started here: what every benchmark on the real libvirtd does around its cluster.
    """
    daemon = RealLibvirtd()
    daemon.start()
    image_dir = make_image_dir()
    try:
        yield daemon, image_dir
    finally:
        try:
            daemon.remove_test_domains(domain_prefix)
        finally:
            remove_image_dir(image_dir)
            daemon.stop()
