"""``virt.migrate`` and ``virt.migrate_abort``: peer-to-peer migration over libvirt TLS, with progress.

The source libvirtd connects to the target's itself (peer to peer), over the
``qemu+tls://`` URI the master names, optionally tunnelled through that one
TLS connection. While libvirt migrates (blocking, in this worker thread), a
second thread polls the job's statistics and fires
``saltmarsh/virt/<agent>/migration/<vm>/progress``; with ``postcopy`` it also
switches the migration to post-copy as soon as it runs. A failure leaves the VM
running here and raises libvirt's own message, with the cause named when it is
a TLS refusal.

Native (not tunnelled) migration streams memory, and with ``copy_storage`` the
disks over NBD, straight between the QEMUs: the target's QEMU listens on
``listen_address`` only, not on every address of the target host.

``copy_storage`` needs somewhere to copy to: with ``all`` libvirt creates each
missing disk on the target through a storage pool covering its directory, so
the source offers a transient one for the migration's duration; with ``inc``
(only the top image moves; its backing file must be at the same path on the
target) libvirt creates nothing, so the source creates the missing overlays on
the target itself, through the same pools.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

from ..errors import InvalidSpec, LibvirtFailure
from ..functions import FunctionContext, function
from ..libvirt_conn import libvirt
from .spec import validate_name

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
TLS_PORT = 16514  # libvirt's default for qemu+tls://
POOL_PREFIX = "saltmarsh-migration-"


def _flags(live: bool, copy_storage: str, postcopy: bool, tunnelled: bool, unsafe: bool) -> int:
    flags = libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    flags |= libvirt.VIR_MIGRATE_LIVE if live else libvirt.VIR_MIGRATE_OFFLINE
    if copy_storage == "all":
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
    elif copy_storage == "inc":
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
    elif copy_storage:
        raise InvalidSpec(f"copy_storage must be all or inc, not {copy_storage!r}")
    if postcopy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    if tunnelled:
        flags |= libvirt.VIR_MIGRATE_TUNNELLED
    if unsafe:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    return int(flags)


class _Progress(threading.Thread):
    """Polls the migration job and fires progress events until stopped."""

    def __init__(self, ctx: FunctionContext, dom: Any, name: str, max_downtime_ms: int, postcopy: bool) -> None:
        super().__init__(name=f"migrate-{name}", daemon=True)
        self._ctx, self._dom, self._name, self._downtime = ctx, dom, name, max_downtime_ms
        self._postcopy = postcopy
        self.switched_to_postcopy = False
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        downtime_set = False
        while not self.stop.wait(POLL_SECONDS):
            try:
                stats = self._dom.jobStats(0)
            except libvirt.libvirtError:
                continue
            if stats.get("type", 0) == libvirt.VIR_DOMAIN_JOB_NONE:
                continue
            if self._downtime and not downtime_set:
                downtime_set = self._try(lambda: self._dom.migrateSetMaxDowntime(self._downtime, 0))
            if self._postcopy and not self.switched_to_postcopy:
                self.switched_to_postcopy = self._try(lambda: self._dom.migrateStartPostCopy(0))
                if self.switched_to_postcopy:
                    log.info("migration of %s switched to post-copy", self._name)
            self._ctx.fire_event(f"saltmarsh/virt/{self._ctx.agent_id}/migration/{self._name}/progress", {
                "vm": self._name, "done": stats.get("data_processed", 0), "total": stats.get("data_total", 0),
                "remaining": stats.get("data_remaining", 0), "bytes_per_s": stats.get("memory_bps", 0),
                "elapsed": round(time.monotonic() - started, 2), "postcopy": self.switched_to_postcopy,
            })

    @staticmethod
    def _try(call: Any) -> bool:
        """Run a call that libvirt accepts only once QEMU's migration runs; False (retried later) until then."""
        try:
            call()
        except libvirt.libvirtError:
            return False
        return True


@function("virt.migrate")
def migrate(ctx: FunctionContext, name: str, target_uri: str, live: bool = True, copy_storage: str = "",
            max_downtime_ms: int = 0, bandwidth_mib: int = 0, postcopy: bool = False, tunnelled: bool = False,
            unsafe: bool = False, migrate_uri: str = "", listen_address: str = "") -> dict[str, Any]:
    """Migrate a VM to the libvirtd at ``target_uri`` (peer to peer); returns time, downtime and whether it
    switched to post-copy."""
    if not target_uri.startswith(("qemu+tls://", "test://", "qemu+unix://", "qemu:///")):
        raise InvalidSpec(f"target_uri {target_uri!r} is not a libvirt URI this agent migrates to")
    flags = _flags(live, copy_storage, postcopy, tunnelled, unsafe)
    operator_uri = target_uri
    if target_uri.startswith("qemu+tls://"):
        problem = ctx.tls.client_problem()
        if problem:  # say so now, instead of libvirt's "Unable to read TLS confirmation" later
            raise LibvirtFailure(f"migrate to {target_uri}", problem, name)
    if target_uri.startswith("qemu+tls://") and not ctx.tls.default_location and "pkipath=" not in target_uri:
        # Our libvirtd connects to the target as a TLS client with this host's client certificate.
        target_uri += ("&" if "?" in target_uri else "?") + "pkipath=" + quote(str(ctx.tls.pkipath))
    params = _params(bandwidth_mib, "" if tunnelled else migrate_uri, "" if tunnelled else listen_address)
    with ctx.libvirt.call("migrate", name) as conn:
        dom = ctx.libvirt.domain(conn, validate_name(name))
        progress = _Progress(ctx, dom, name, int(max_downtime_ms), postcopy)
        started = time.monotonic()
        try:
            with _target_storage(target_uri, _disks(dom) if copy_storage else [], copy_storage == "inc"):
                progress.start()
                dom.migrateToURI3(target_uri, params, flags)
        except libvirt.libvirtError as exc:
            raise LibvirtFailure(f"migrate to {operator_uri}", _reason(ctx, exc, target_uri), name) from exc
        finally:
            progress.stop.set()
            if progress.is_alive():
                progress.join(timeout=5)
        elapsed = time.monotonic() - started
    done = _completed_stats(target_uri, name)
    return {"name": name, "target": operator_uri, "seconds": round(elapsed, 3),
            "downtime_ms": done.get("downtime"), "data_total": done.get("data_total"),
            "postcopy": progress.switched_to_postcopy, "copy_storage": copy_storage,
            "listen_address": params.get(libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS, "")}


def _params(bandwidth_mib: int, migrate_uri: str, listen_address: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if bandwidth_mib:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth_mib)
    if migrate_uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = migrate_uri
    if listen_address:
        # Without it the target's QEMU (and its NBD server) listens on every address of the target host.
        params[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = listen_address
    return params


def _reason(ctx: FunctionContext, exc: Any, target_uri: str) -> str:
    """libvirt's message, with the cause named from the CRL when TLS refused the connection."""
    message = str(exc.get_error_message() or exc)
    if target_uri.startswith("qemu+tls://") and any(marker in message for marker in TLS_REFUSALS):
        parts = urlsplit(target_uri)
        cause = ctx.tls.refusal_cause(parts.hostname or "", parts.port or TLS_PORT)
        if cause:
            return f"TLS refused: {cause} (libvirt said: {message})"
    return explain(message)


@dataclass(frozen=True)
class _Disk:
    """A writable file-backed disk of the VM, as --copy-storage copies it."""

    path: str
    format: str
    capacity: int
    backing: str = ""
    backing_format: str = ""


def _disks(dom: Any) -> list[_Disk]:
    """The VM's writable file-backed disks, with their size and backing file (what --copy-storage copies)."""
    disks = []
    for disk in ET.fromstring(dom.XMLDesc(0)).iterfind("devices/disk[@type='file'][@device='disk']"):
        source, target = disk.find("source"), disk.find("target")
        if source is None or not source.get("file") or target is None or disk.find("readonly") is not None:
            continue
        driver, backing = disk.find("driver"), disk.find("backingStore/source")
        disks.append(_Disk(
            path=source.get("file", ""), format=driver.get("type", "raw") if driver is not None else "raw",
            capacity=int(dom.blockInfo(target.get("dev", ""))[0]),
            backing=backing.get("file", "") if backing is not None else "",
            backing_format=_format_of(disk.find("backingStore"))))
    return disks


def _format_of(element: ET.Element | None) -> str:
    fmt = element.find("format") if element is not None else None
    return fmt.get("type", "") if fmt is not None else ""


@contextmanager
def _target_storage(target_uri: str, disks: list[_Disk], incremental: bool) -> Iterator[None]:
    """Transient storage pools on the target for the disks' directories that no pool covers yet, and with
    ``incremental`` the missing disks themselves (on the same backing file).

    libvirt creates a copied disk that is missing on the target only inside a storage pool whose target
    path is the disk's directory, and only for a full copy: an incremental copy needs the disk to exist on
    the target already. The pools go away afterwards (the disks stay).
    """
    if not disks:
        yield
        return
    conn = libvirt.open(target_uri)
    created: list[Any] = []
    try:
        for path in sorted({str(PurePosixPath(d.path).parent) for d in disks}):
            pool = _pool_for(conn, path, created)
            for disk in (d for d in disks if incremental and str(PurePosixPath(d.path).parent) == path):
                _create_volume(conn, pool, disk)
        yield
    finally:
        for pool in created:
            try:
                pool.destroy()
            except libvirt.libvirtError as exc:
                log.warning("could not remove the transient storage pool %s: %s", pool.name(), exc)
        conn.close()


def _pool_for(conn: Any, path: str, created: list[Any]) -> Any:
    """The target's storage pool for directory ``path``: an existing one, else a new transient one."""
    try:
        return conn.storagePoolLookupByTargetPath(path)
    except libvirt.libvirtError:
        pass
    pool_name = POOL_PREFIX + hashlib.sha256(path.encode()).hexdigest()[:12]
    pool = conn.storagePoolCreateXML(_pool_xml(pool_name, path), libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
    created.append(pool)
    log.info("transient storage pool %s for %s on the target", pool_name, path)
    return pool


def _create_volume(conn: Any, pool: Any, disk: _Disk) -> None:
    """Create ``disk`` on the target (same size, format and backing file) unless it is there already."""
    pool.refresh(0)
    try:
        conn.storageVolLookupByPath(disk.path)
        return
    except libvirt.libvirtError:
        pass
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = PurePosixPath(disk.path).name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(disk.capacity)
    ET.SubElement(ET.SubElement(vol, "target"), "format", type=disk.format)
    if disk.backing:
        backing = ET.SubElement(vol, "backingStore")
        ET.SubElement(backing, "path").text = disk.backing
        ET.SubElement(backing, "format", type=disk.backing_format or "raw")
    pool.createXML(ET.tostring(vol, encoding="unicode"), 0)
    log.info("created %s on the target for an incremental copy", disk.path)


def _pool_xml(name: str, path: str) -> str:
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = name
    ET.SubElement(ET.SubElement(pool, "target"), "path").text = path
    return ET.tostring(pool, encoding="unicode")


TLS_REFUSALS = ("Unable to read TLS confirmation", "Failed to verify peer's certificate",
                "authentication failed")


def explain(message: str) -> str:
    """libvirt's message, with the likely cause named when it is a TLS refusal (libvirt's own is opaque)."""
    if any(marker in message for marker in TLS_REFUSALS):
        return ("TLS refused: the target did not accept this host's certificate or this host did not accept the "
                "target's (revoked, expired, or signed by another CA; the target libvirtd's log says which). "
                f"libvirt said: {message}")
    return message


def _completed_stats(target_uri: str, name: str) -> dict[str, Any]:
    """The finished job's statistics (downtime) as the target recorded them; {} if it cannot tell.

    The source's domain is gone (undefined) once the migration completes, so ask the target.
    """
    try:
        conn = libvirt.open(target_uri)
    except libvirt.libvirtError:
        return {}
    try:
        return dict(conn.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
    except libvirt.libvirtError:
        return {}
    finally:
        conn.close()


@function("virt.migrate_abort")
def migrate_abort(ctx: FunctionContext, name: str) -> dict[str, str]:
    """Abort a running migration of a VM (it keeps running here)."""
    with ctx.libvirt.call("abort migration of", name) as conn:
        ctx.libvirt.domain(conn, validate_name(name)).abortJob()
    return {"name": name, "aborted": "yes"}
