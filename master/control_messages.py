"""Messages between local clients (CLI, Python API) and the master's control socket.

The control socket is a local IPC socket whose file permissions are its access
control, so these frames are not signed; they are still size-limited and
schema-checked like everything the master reads.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from saltmarsh.protocol.jobcontrol import KillReport, RunningJob

from .eventbus import Event

MAX_CONTROL_FRAME = 1024 * 1024
# libzmq drops a frame over its MAXMSGSIZE unread, with the connection, so nobody learns why;
# it is set this far above our own limit so that the master reads, logs and answers a request
# that is only too large, and the transport still drops a flood before Python allocates it.
CONTROL_TRANSPORT_MAX = 2 * MAX_CONTROL_FRAME
# Join tokens (saltmarsh key token --ttl): a token meant for a machine not built within a month
# is better issued when it is.
MAX_TOKEN_TTL = 30 * 24 * 3600.0


class ControlRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Client -> master: run command ``cmd`` with ``args``; ``id`` pairs replies with it."""

    id: int
    cmd: Annotated[str, msgspec.Meta(max_length=64)]
    args: dict[str, Any] = {}


class ControlReply(msgspec.Struct, frozen=True):
    """Master -> client: the outcome of request ``id``, or (``events`` set) streamed events."""

    id: int
    ok: bool = True
    result: Any = None
    error: str = ""
    events: list[Event] | None = None


class RequestId(msgspec.Struct, frozen=True):
    """Just the ``id`` of a request the master refuses unread (too large, or malformed), to answer it."""

    id: int


# ---- results of the job-control commands (master/commands/jobs.py) ---------------------------


class JobStarted(msgspec.Struct, frozen=True):
    """The reply to ``run`` and ``job.wait``: the job, who is expected, and who will not answer.

    ``offline`` are expected agents the master knows are down (not waited for), ``unknown`` ids a
    list target named that have no accepted key (never sent the job). ``job.wait`` also gives the
    returns the cache holds already and ``wait``, the seconds to wait for the others.
    """

    jid: str
    expected: list[str]
    offline: dict[str, str] = {}
    unknown: dict[str, str] = {}
    returns: dict[str, dict[str, Any]] = {}
    wait: float = 0.0


class RunningReply(msgspec.Struct, frozen=True):
    """The reply to ``job.running``: each answering agent's jobs, and why each other agent is missing."""

    running: dict[str, list[RunningJob]]
    missing: dict[str, str] = {}


class KillReply(msgspec.Struct, frozen=True):
    """The reply to ``job.kill``: what each agent did, and why each other agent is missing."""

    jid: str
    reports: dict[str, KillReport]
    missing: dict[str, str] = {}
