"""``virt.migrate`` and ``virt.migrate_abort``: peer-to-peer migration over libvirt TLS, with progress.

The source libvirtd connects to the target's itself (peer to peer), over the
``qemu+tls://`` URI the master names, optionally tunnelled through that one
TLS connection. While libvirt migrates (blocking, in this worker thread), a
second thread polls the job's statistics and fires
``saltmarsh/virt/<agent>/migration/<vm>/progress``. A failure leaves the VM
running here and raises libvirt's own message.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import quote

from ..errors import InvalidSpec, LibvirtFailure
from ..functions import FunctionContext, function
from ..libvirt_conn import libvirt
from .spec import validate_name

POLL_SECONDS = 0.2


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

    def __init__(self, ctx: FunctionContext, dom: Any, name: str, max_downtime_ms: int) -> None:
        super().__init__(name=f"migrate-{name}", daemon=True)
        self._ctx, self._dom, self._name, self._downtime = ctx, dom, name, max_downtime_ms
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
                try:  # settable only once the migration job exists
                    self._dom.migrateSetMaxDowntime(self._downtime, 0)
                    downtime_set = True
                except libvirt.libvirtError:
                    pass
            self._ctx.fire_event(f"saltmarsh/virt/{self._ctx.agent_id}/migration/{self._name}/progress", {
                "vm": self._name, "done": stats.get("data_processed", 0), "total": stats.get("data_total", 0),
                "remaining": stats.get("data_remaining", 0), "bytes_per_s": stats.get("memory_bps", 0),
                "elapsed": round(time.monotonic() - started, 2),
            })


@function("virt.migrate")
def migrate(ctx: FunctionContext, name: str, target_uri: str, live: bool = True, copy_storage: str = "",
            max_downtime_ms: int = 0, bandwidth_mib: int = 0, postcopy: bool = False, tunnelled: bool = False,
            unsafe: bool = False, migrate_uri: str = "") -> dict[str, Any]:
    """Migrate a VM to the libvirtd at ``target_uri`` (peer to peer); returns time and downtime."""
    if not target_uri.startswith(("qemu+tls://", "test://", "qemu+unix://", "qemu:///")):
        raise InvalidSpec(f"target_uri {target_uri!r} is not a libvirt URI this agent migrates to")
    flags = _flags(live, copy_storage, postcopy, tunnelled, unsafe)
    if target_uri.startswith("qemu+tls://"):
        problem = ctx.tls.client_problem()
        if problem:  # say so now, instead of libvirt's "Unable to read TLS confirmation" later
            raise LibvirtFailure(f"migrate to {target_uri}", problem, name)
    if target_uri.startswith("qemu+tls://") and not ctx.tls.default_location and "pkipath=" not in target_uri:
        # Our libvirtd connects to the target as a TLS client with this host's client certificate.
        target_uri += ("&" if "?" in target_uri else "?") + "pkipath=" + quote(str(ctx.tls.pkipath))
    params: dict[str, Any] = {}
    if bandwidth_mib:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth_mib)
    if migrate_uri and not tunnelled:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = migrate_uri
    with ctx.libvirt.call("migrate", name) as conn:
        dom = ctx.libvirt.domain(conn, validate_name(name))
        progress = _Progress(ctx, dom, name, int(max_downtime_ms))
        progress.start()
        started = time.monotonic()
        try:
            dom.migrateToURI3(target_uri, params, flags)
        except libvirt.libvirtError as exc:
            raise LibvirtFailure(f"migrate to {target_uri}", explain(exc.get_error_message() or str(exc)),
                                 name) from exc
        finally:
            progress.stop.set()
            progress.join(timeout=5)
        elapsed = time.monotonic() - started
    done = _completed_stats(target_uri, name)
    return {"name": name, "target": target_uri, "seconds": round(elapsed, 3),
            "downtime_ms": done.get("downtime"), "data_total": done.get("data_total")}


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
