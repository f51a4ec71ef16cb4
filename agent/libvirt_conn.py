"""The libvirt bindings, imported once, and how the agent tells a live connection from a wedged one.

The agent runs test.* and host.* without the bindings (``libvirt`` is None then).

Two defences, because a connection can fail in two ways:

- the peer goes silent (libvirtd hung, the socket stalled): libvirt's own keepalive, turned on
  for every connection (KEEPALIVE_INTERVAL, KEEPALIVE_COUNT), closes the connection after
  about 20 s without an answer; calls blocked on it fail, and the close callback makes the
  agent reconnect (agent/virt/events.py);
- the connection stays up but a call never returns (libvirtd answers keepalives from its event
  loop while the RPC waits behind a stuck QEMU monitor or storage pool): when a call has been
  in flight for STUCK_CALL_SECONDS, the agent sends the connection a trivial RPC; if that gets
  no answer within PROBE_TIMEOUT, the connection is wedged, and new calls go to a new one
  (agent/virt/host.py). The stuck calls stay where they are, and their jobs are given up on at
  their deadlines (agent/executor.py).

Drivers that are not remote (test:///) have no keepalive; that is fine, they cannot stall.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

libvirt: Any
try:
    import libvirt as _bindings
except ImportError:
    libvirt = None
else:
    libvirt = _bindings
    # libvirt prints every error to stderr by default; we report them ourselves, once.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

KEEPALIVE_INTERVAL = 5  # seconds between libvirt's keepalive messages on a quiet connection
KEEPALIVE_COUNT = 3  # keepalives without an answer before libvirt closes the connection
STUCK_CALL_SECONDS = 5.0  # a call in flight this long has its connection probed
PROBE_TIMEOUT = 5.0  # a probe unanswered this long means the connection is wedged


def keep_alive(conn: Any) -> None:
    """Turn libvirt's keepalive on for ``conn`` (needs the event loop; a local driver has none)."""
    try:
        conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
    except libvirt.libvirtError as exc:
        log.debug("no libvirt keepalive on this connection: %s", exc.get_error_message())


def answers(conn: Any, timeout: float = PROBE_TIMEOUT) -> bool:
    """True if a trivial call on ``conn`` returns within ``timeout`` (an error is an answer too).

    The call is made in a throwaway daemon thread: on a wedged connection it never returns,
    and that thread is all it costs.
    """
    answered = threading.Event()

    def probe() -> None:
        try:
            conn.getLibVersion()
        except libvirt.libvirtError:
            pass  # the connection answered, if only with an error: it is not stuck
        answered.set()

    threading.Thread(target=probe, name="libvirt-probe", daemon=True).start()
    return answered.wait(timeout)
