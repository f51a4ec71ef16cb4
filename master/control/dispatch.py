"""What every control front end does with a request: find its operation, decode its args, map what comes back.

The ZeroMQ control socket (server.py) and the stream socket (stream.py) differ only in how frames
travel and how a stream's events reach the client; both call ``answer`` here, so a request gets the
same result or the same refusal (with the same ``code``) whichever socket carried it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ..errors import CommandError, MasterError
from ..service.errors import InternalError, Invalid, Refused
from ..service.registry import OPERATIONS, ServiceContext, Watch
from .messages import END_STREAM, ControlReply, ControlRequest, StreamEnd

if TYPE_CHECKING:
    from ..server import Master

log = logging.getLogger("saltmarsh.master.control.server")  # one logger for the control front ends

A = TypeVar("A")


async def answer(master: Master, request: ControlRequest, watch: Watch,
                 end_stream: Callable[[int], None]) -> ControlReply:
    """The reply to ``request``: its operation's result, or its refusal with the refusal's stable code.

    ``watch`` streams events to this request's client; ``end_stream`` ends the stream of an earlier
    request of the same client (``stream.end``, the front ends' own command).
    """
    try:
        result = await _call(master, request, watch, end_stream)
    except MasterError as exc:  # a refusal: its kind travels as its code
        code = exc.code if isinstance(exc, CommandError) else Refused.code
        return ControlReply(request.id, ok=False, error=str(exc), code=code)
    except Exception as exc:
        log.exception("control command %s failed", request.cmd)
        return ControlReply(request.id, ok=False, error=f"internal error: {exc}", code=InternalError.code)
    return ControlReply(request.id, result=result)


async def _call(master: Master, request: ControlRequest, watch: Watch, end_stream: Callable[[int], None]) -> Any:
    if request.cmd == END_STREAM:  # the socket's own: a stream is the front end's, not the service's
        end_stream(decode_args(request.args, StreamEnd).id)
        return None
    op = OPERATIONS.get(request.cmd)
    if op is None:
        raise Invalid(f"unknown command {request.cmd!r}")
    return await op.run(ServiceContext(master, watch), decode_args(request.args, op.request))


def refusal(request_id: int, reason: str) -> ControlReply:
    """The reply to a request refused unread (too large, or malformed), once its id is known."""
    return ControlReply(request_id, ok=False, error=f"refused: {reason}", code=Refused.code)


def decode_args(args: dict[str, Any], kind: type[A]) -> A:
    """A request's args as the typed request ``kind``; Invalid (with msgspec's reason) if they do not fit."""
    try:
        return msgspec.convert(args, type=kind)
    except msgspec.ValidationError as exc:
        raise Invalid(f"bad arguments: {exc}") from exc
