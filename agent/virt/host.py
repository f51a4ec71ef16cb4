"""The agent's one long-lived libvirt connection, reopened when libvirtd goes away."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import LibvirtFailure, VmNotFound
from ..libvirt_conn import libvirt

log = logging.getLogger(__name__)


class LibvirtHost:
    """Owns the connection to ``uri``; ``with host.call(what, vm) as conn`` is how functions use it.

    libvirt connections are thread-safe, so worker threads share this one; the
    lock only guards opening and replacing it.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: Any = None
        self._lock = threading.Lock()
        self._open_hooks: list[Callable[[Any], None]] = []

    def on_open(self, hook: Callable[[Any], None]) -> None:
        """Call ``hook(conn)`` on every newly opened connection (event registration)."""
        self._open_hooks.append(hook)

    def forget(self) -> None:
        """Drop a connection libvirt told us is closed; the next call opens a new one."""
        with self._lock:
            self._conn = None

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
        try:
            yield conn
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise VmNotFound(f"no VM named {vm!r} on this hypervisor") from exc
            raise LibvirtFailure(what, exc.get_error_message() or str(exc), vm) from exc

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
