"""Messages between local clients (CLI, Python API) and the master's control socket.

The control socket is a local IPC socket whose file permissions are its access
control, so these frames are not signed; they are still size-limited and
schema-checked like everything the master reads. A request's ``args`` are the
fields of the service request its ``cmd`` names (master/service/types/).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from .endpoints import MAX_CONTROL_FRAME as MAX_CONTROL_FRAME

# libzmq drops a frame over its MAXMSGSIZE unread, with the connection, so nobody learns why;
# it is set this far above our own limit so that the master reads, logs and answers a request
# that is only too large, and the transport still drops a flood before Python allocates it.
CONTROL_TRANSPORT_MAX = 2 * MAX_CONTROL_FRAME


class Event(msgspec.Struct, frozen=True):
    """One event of the master's bus: its tag, its data, when it happened, and which agent (if any) raised it."""

    tag: str
    data: Any
    ts: float
    agent: str = ""


class ControlRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Client -> master: run command ``cmd`` with ``args``; ``id`` pairs replies with it."""

    id: int
    cmd: Annotated[str, msgspec.Meta(max_length=64)]
    args: dict[str, Any] = {}


class ControlReply(msgspec.Struct, frozen=True):
    """Master -> client: the outcome of request ``id``, or (``events`` set) streamed events.

    A refusal has ``ok`` false, ``error`` the one line for the operator and ``code`` its stable
    kind (master/service/errors.py: ``not_found``, ``conflict``, ``unavailable``, ``timed_out``,
    ``refused``, ``invalid``, or ``internal``), from which the client raises the same typed error.
    """

    id: int
    ok: bool = True
    result: Any = None
    error: str = ""
    events: list[Event] | None = None
    code: str = ""


class RequestId(msgspec.Struct, frozen=True):
    """Just the ``id`` of a request the master refuses unread (too large, or malformed), to answer it."""

    id: int


END_STREAM = "stream.end"  # the control socket's own command: end the stream of an earlier request


class StreamEnd(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The args of ``stream.end``: the request id whose event stream the client is done with."""

    id: int
