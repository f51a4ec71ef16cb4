"""Messages between local clients (CLI, Python API) and the master's control socket.

The control socket is a local IPC socket whose file permissions are its access
control, so these frames are not signed; they are still size-limited and
schema-checked like everything the master reads.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from .eventbus import Event

MAX_CONTROL_FRAME = 1024 * 1024


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
