"""The agent's one long-lived libvirt connection, reopened when libvirtd goes away or it wedges."""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import LibvirtFailure, VmNotFound
from ..libvirt_conn import STUCK_CALL_SECONDS, answers, libvirt

log = logging.getLogger(__name__)


class LibvirtHost:
    """Owns the connection to ``uri``; ``with host.call(what, vm) as conn`` is how functions use it.

    libvirt connections are thread-safe, so worker threads share this one; the
    lock only guards opening and replacing it. Calls made through ``call`` are
    timed, so that ``replace_if_wedged`` can tell a stuck connection (libvirt_conn.py).
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: Any = None
        self._lock = threading.Lock()
        self._open_hooks: list[Callable[[Any], None]] = []
        self._busy_hooks: list[Callable[[], None]] = []
        self._calls: dict[int, tuple[float, Any]] = {}  # in flight: (started, connection)
        self._calls_lock = threading.Lock()
        self._call_ids = itertools.count()
        self._change_ids = itertools.count(1)
        self.replaced = 0  # wedged connections given up on since start
        # Bumped whenever what libvirt holds here may have changed (touch()): a number an inventory
        # taken earlier can be compared with to know it may be stale (agent/virt/events.py).
        self.changes = 0

    def on_open(self, hook: Callable[[Any], None]) -> None:
        """Call ``hook(conn)`` on every newly opened connection (event registration)."""
        self._open_hooks.append(hook)

    def on_busy(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` whenever a call starts with none in flight (the watchdog wakes then, not on a timer)."""
        self._busy_hooks.append(hook)

    def in_flight(self) -> bool:
        """True while a call made through ``call`` has not returned."""
        return bool(self._calls)

    def touch(self) -> None:
        """Note that what libvirt holds here may have changed (any thread)."""
        self.changes = next(self._change_ids)  # itertools.count is atomic; the assignment too

    def forget(self) -> None:
        """Drop a connection libvirt told us is closed; the next call opens a new one."""
        with self._lock:
            self._conn = None
        self.touch()

    def __enter__(self) -> LibvirtHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connection(self) -> Any:
        """The live connection, opened (again) if there is none or libvirtd restarted."""
        with self._lock:
            if self._conn is not None and self._alive(self._conn):
                return self._conn
            self._close_locked()
            if libvirt is None:
                raise LibvirtFailure("open", "libvirt-python is not installed on this agent")
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise LibvirtFailure(f"open {self.uri}", exc.get_error_message()) from exc
            log.info("libvirt connection to %s open", self.uri)
            self.touch()  # libvirtd may have restarted, with other VMs than before
            for hook in self._open_hooks:
                try:
                    hook(self._conn)
                except libvirt.libvirtError as exc:
                    log.warning("libvirt connection hook failed: %s", exc.get_error_message())
            return self._conn

    @staticmethod
    def _alive(conn: Any) -> bool:
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    @contextlib.contextmanager
    def call(self, what: str, vm: str = "") -> Iterator[Any]:
        """Yield the connection; a libvirt error inside becomes one LibvirtFailure (what, vm, message)."""
        conn = self.connection()
        call_id = next(self._call_ids)
        with self._calls_lock:
            self._calls[call_id] = (time.monotonic(), conn)
            first = len(self._calls) == 1
        if first:
            for hook in self._busy_hooks:
                hook()
        try:
            yield conn
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise VmNotFound(f"no VM named {vm!r} on this hypervisor") from exc
            raise LibvirtFailure(what, exc.get_error_message() or str(exc), vm) from exc
        finally:
            with self._calls_lock:
                del self._calls[call_id]

    def replace_if_wedged(self) -> bool:
        """If a call has been stuck on the connection and a probe gets no answer, drop it; True if so.

        The next call opens a new connection (and the open hooks register events again). The
        stuck calls keep the old one; it is closed in a thread of its own, since closing may
        wait for them.
        """
        conn = self._conn
        now = time.monotonic()
        with self._calls_lock:
            stuck = [now - started for started, c in self._calls.values() if c is conn]
        if conn is None or not stuck or max(stuck) < STUCK_CALL_SECONDS or answers(conn):
            return False
        with self._lock:
            if self._conn is not conn:
                return False  # replaced meanwhile
            self._conn = None
        self.replaced += 1
        log.warning("libvirt connection to %s is wedged (a call in flight for %.0f s, and a probe got no answer): "
                    "new calls go to a new connection", self.uri, max(stuck))
        threading.Thread(target=self._close_quietly, args=(conn,), name="libvirt-close", daemon=True).start()
        return True

    @staticmethod
    def _close_quietly(conn: Any) -> None:
        with contextlib.suppress(Exception):  # a wedged connection may fail to close; it is dropped anyway
            conn.close()

    def domain(self, conn: Any, name: str) -> Any:
        """Look a domain up by name; VmNotFound if there is none."""
        try:
            return conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            raise VmNotFound(f"no VM named {name!r} on this hypervisor") from exc

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # a dead connection may fail to close; it is gone anyway
                self._conn.close()
            self._conn = None
