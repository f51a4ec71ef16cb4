"""The control stream socket: the control socket's requests over a plain Unix stream, as JSON.

Why a second front end: a client of the ZeroMQ control socket must import pyzmq and msgspec, some
60 ms of every CLI start, more than the rest of ``saltmarsh run hv1 test.ping``. Over this socket a
client needs only the stdlib (``socket``, ``json``): the CLI's fast path (master/cli/fast.py) uses it.
It is the same service through the same dispatch (dispatch.py): the same requests (ControlRequest,
its ``args`` decoded into the operation's typed request), the same replies (ControlReply, errors by
their ``code``) and the same event streams (a request's ``watch`` sends events under its id).

Framing: each message, either way, is a 4-byte big-endian length then that many bytes of UTF-8
JSON. A request longer than MAX_CONTROL_FRAME is refused with a logged reason and its connection
closed unread (the length is all we have read, so there is no id to answer; reading on to skip it
would let a client make us read any amount); one that is not JSON or not a ControlRequest is
refused with a logged reason and, when its id can be read, an error reply, and the connection
serves on. Nothing a client sends ends the server.

A connection is one client: its streams end when it closes (or ``stream.end``), so nothing needs
probing for vanished clients as on the ROUTER socket. Events queued for a connection go out in one
frame per turn of the event loop (MAX_BATCH at most); while a connection's unsent output is over
MAX_BUFFERED, its events are dropped and counted, so a client that stops reading cannot make the
master's memory grow.

The socket file is 0600 in the control socket's 0700 directory (same access control: whoever can
open it may command the master).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import TYPE_CHECKING, Any

import msgspec

from ..events.bus import Event
from ..service.errors import InternalError
from .batching import EventBatches
from .dispatch import answer, refusal
from .endpoints import MAX_CONTROL_FRAME
from .messages import ControlReply, ControlRequest

if TYPE_CHECKING:
    from ..server import Master

log = logging.getLogger(__name__)

HEADER = 4  # bytes of the big-endian length before each frame
MAX_BUFFERED = 16 * 1024 * 1024  # unsent bytes for one connection past which its events are dropped


def frame(reply: ControlReply) -> bytes:
    """``reply`` as one frame: its length, then its JSON (NaN and infinities as Python's json writes them).

    What JSON cannot hold (a result msgpack carries but JSON does not, such as a map keyed by lists)
    makes the reply an internal error naming why, so the client is not left waiting for it.
    """
    try:
        body = json.dumps(msgspec.to_builtins(reply, str_keys=True), separators=(",", ":"),
                          ensure_ascii=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        log.warning("control stream: reply to request %d cannot be sent as JSON: %s", reply.id, exc)
        failed = ControlReply(reply.id, ok=False, error=f"internal error: the reply cannot be sent as JSON ({exc})",
                              code=InternalError.code)
        body = json.dumps(msgspec.to_builtins(failed)).encode()
    return len(body).to_bytes(HEADER, "big") + body


class StreamServer:
    """Serves the control requests of stream clients through the shared dispatch."""

    def __init__(self, master: Master) -> None:
        self._master = master
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self.dropped = 0  # events dropped for slow clients, over all connections

    async def start(self) -> None:
        """Bind the 0600 socket in the control directory (made 0700 by the ROUTER socket's bind) and serve."""
        path = self._master.config.stream_socket
        path.unlink(missing_ok=True)
        old = os.umask(0o177)  # the file is 0600 from the start: no moment when others could connect
        try:
            self._server = await asyncio.start_unix_server(self._connected, path=str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)

    def close(self) -> None:
        """Stop listening and end every connection and its streams."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close()
        self._master.config.stream_socket.unlink(missing_ok=True)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, reader, writer)
        self._connections.add(connection)
        try:
            await connection.serve()
        finally:
            connection.close()
            self._connections.discard(connection)

    @property
    def master(self) -> Master:
        """The master whose service this front end serves."""
        return self._master


class _Connection:
    """One client: its requests, its streams, its queued events."""

    def __init__(self, server: StreamServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._server = server
        self._bus = server.master.bus
        self._reader = reader
        self._writer = writer
        self._streams: dict[int, list[int]] = {}
        self._batches: EventBatches[int] = EventBatches(self._send_events)
        self._answering: set[asyncio.Task[None]] = set()
        self._closed = False

    async def serve(self) -> None:
        """Read frames until the client closes, or sends a length over the limit."""
        while True:
            try:
                length = int.from_bytes(await self._reader.readexactly(HEADER), "big")
                if length > MAX_CONTROL_FRAME:
                    log.warning("control stream: rejected request: the request is %d bytes, more than the %d "
                                "the control socket takes (connection closed)", length, MAX_CONTROL_FRAME)
                    return
                body = await self._reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the client went away, possibly mid-frame
            request = self._decode(body)
            if request is not None:
                task = asyncio.create_task(self._answer(request))
                self._answering.add(task)  # the loop keeps only a weak reference to a task
                task.add_done_callback(self._answering.discard)

    def _decode(self, body: bytes) -> ControlRequest | None:
        """The request in ``body``; None (logged, and answered if its id can be read) if it is not one."""
        try:
            data: Any = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            log.warning("control stream: rejected request: not JSON: %s", exc)
            return None
        try:
            return msgspec.convert(data, type=ControlRequest)
        except msgspec.ValidationError as exc:
            log.warning("control stream: rejected request: %s", exc)
            request_id = data.get("id") if isinstance(data, dict) else None
            if isinstance(request_id, int) and not isinstance(request_id, bool):
                self._write(frame(refusal(request_id, f"malformed control request: {exc}")))
            return None

    async def _answer(self, request: ControlRequest) -> None:
        reply = await answer(self._server.master, request,
                             lambda pattern, seconds: self._subscribe(request.id, pattern, seconds),
                             self._end_stream)
        self._write(frame(reply))
        if not self._closed:
            try:
                await self._writer.drain()
            except ConnectionError:
                self.close()

    def _subscribe(self, request_id: int, pattern: str, seconds: float | None) -> None:
        if self._closed:
            return
        handle = self._bus.subscribe(pattern, lambda event: self._batches.queue(request_id, event))
        self._streams.setdefault(request_id, []).append(handle)
        if seconds is not None:
            asyncio.get_running_loop().call_later(seconds, self._end_stream, request_id)

    def _end_stream(self, request_id: int) -> None:
        """Drop one stream's subscriptions and queued events (unknown or ended streams are ignored)."""
        for handle in self._streams.pop(request_id, []):
            self._bus.unsubscribe(handle)
        self._batches.drop(request_id)

    def _send_events(self, request_id: int, events: list[Event]) -> None:
        if self._closed:
            return
        if self._writer.transport.get_write_buffer_size() > MAX_BUFFERED:
            self._server.dropped += len(events)
            log.warning("control stream: dropped %d events for a slow client", len(events))
            return
        self._write(frame(ControlReply(request_id, events=events)))

    def _write(self, data: bytes) -> None:
        if self._closed or self._writer.is_closing():
            return
        self._writer.write(data)

    def close(self) -> None:
        """End every stream of this client and close its connection (again: nothing happens)."""
        if self._closed:
            return
        self._closed = True
        for request_id in list(self._streams):
            self._end_stream(request_id)
        self._writer.close()
