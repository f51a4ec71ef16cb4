"""The libvirt bindings, imported once, and how the agent tells a live connection from a wedged one.

The agent runs test.* and host.* without the bindings (``libvirt`` is None then).

A connection can stop answering in two ways: the peer goes silent (libvirtd hung, the socket
stalled), or it stays up while a call never returns (libvirtd waits behind a stuck QEMU monitor
or storage pool). Both look the same from here: when a call has been in flight for
STUCK_CALL_SECONDS, the agent sends the connection a trivial RPC; if that gets no answer within
PROBE_TIMEOUT, the connection is wedged, and new calls go to a new one (agent/virt/host.py). The
stuck calls stay where they are, and their jobs are given up on at their deadlines
(agent/executor.py).

libvirt's own keepalive is deliberately not turned on: with it, the source host's lifecycle
event for a VM paused for post-copy migration never reached the agent (found by
tests/integration/test_migration_options.py, which passes again without it), and the probe
above already covers a silent peer.
"""

from __future__ import annotations

import threading
from typing import Any

libvirt: Any
try:
    import libvirt as _bindings
except ImportError:
    libvirt = None
else:
    libvirt = _bindings
    # libvirt prints every error to stderr by default; we report them ourselves, once.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

STUCK_CALL_SECONDS = 5.0  # a call in flight this long has its connection probed
PROBE_TIMEOUT = 5.0  # a probe unanswered this long means the connection is wedged


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
