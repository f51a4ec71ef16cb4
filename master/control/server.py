"""The control socket: local clients (CLI, Python API) call the service layer and receive event streams.

A thin front end of master/service/: each request's ``cmd`` names a service operation, its
``args`` are decoded into that operation's typed request (Invalid if they do not fit), and the
result or typed error is sent back once, the error with its stable ``code``
(master/service/errors.py), which the client turns back into the same error. Event streams
(a job's returns, a subscription, a migration's progress) are this front end's: an operation
asks to ``watch`` a pattern, and the events are sent under the request's id.

An IPC ROUTER socket in a 0700 directory, itself 0600: whoever can open the
file may command the master, as with Salt's master socket. ROUTER_MANDATORY
makes a send to a vanished client fail at once, which is how streams end; a
stream that has had nothing to send for PROBE_SECONDS is sent an empty
keep-alive reply (id 0, which no request uses), so that the subscriptions of a
client that went away (every ``saltmarsh run`` leaves one for its job's
returns) are dropped even when no event would ever match them again. A
long-lived client ends a stream it is done with (``stream.end``); the streams
of ``run`` and ``virt.migrate`` also end by themselves once the caller's wait
is over, so a client that forgets cannot make the bus grow job by job.

Events are queued per stream and sent in one reply per turn of the event loop,
or as soon as MAX_BATCH have queued up (batching.py), so a burst never gathers in memory.

The dispatch itself (operation, typed args, error codes) is dispatch.py's, shared with the control
stream socket (stream.py), the same service for clients that only have the stdlib.

A request larger than MAX_CONTROL_FRAME, or one that violates its schema, is refused
with a logged reason and, when its id can be read, an error reply, so that its client
learns why at once instead of waiting out its timeout.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, cast

import zmq
import zmq.asyncio

from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.errors import MalformedFrame

from ..events.bus import Event
from ..service.registry import load_all
from .batching import EventBatches
from .dispatch import answer, refusal
from .messages import CONTROL_TRANSPORT_MAX, MAX_CONTROL_FRAME, ControlReply, ControlRequest, RequestId

if TYPE_CHECKING:
    from ..server import Master

log = logging.getLogger(__name__)

StreamKey = tuple[bytes, int]

PROBE_SECONDS = 5.0
KEEPALIVE = encode(ControlReply(0))


class ControlServer:
    """Serves control commands and streams subscribed events to each client, batched."""

    def __init__(self, ctx: zmq.asyncio.Context, master: Master) -> None:
        load_all()
        self._master = master
        self._socket = ctx.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._socket.setsockopt(zmq.MAXMSGSIZE, CONTROL_TRANSPORT_MAX)
        self._socket.setsockopt(zmq.SNDHWM, 100_000)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._streams: dict[StreamKey, list[int]] = defaultdict(list)
        self._batches: EventBatches[StreamKey] = EventBatches(self._send_events)
        self._last_sent: dict[bytes, float] = {}
        self._answering: set[asyncio.Task[None]] = set()
        self.dropped = 0

    def bind(self) -> None:
        """Create the 0700 directory and bind the 0600 socket inside it."""
        directory = self._master.config.control_dir
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        path = self._master.config.control_socket
        path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            self._socket.bind(f"ipc://{path}")
        finally:
            os.umask(old)
        os.chmod(path, 0o600)

    def close(self) -> None:
        """Drop every stream and close the socket."""
        for handles in self._streams.values():
            for handle in handles:
                self._master.bus.unsubscribe(handle)
        self._socket.close(linger=0)
        self._master.config.control_socket.unlink(missing_ok=True)

    async def serve(self) -> None:
        """Answer control requests until cancelled; meanwhile end the streams of vanished clients."""
        reaper = asyncio.create_task(self._reap_vanished(), name="control-reaper")
        try:
            await self._receive()
        finally:
            reaper.cancel()

    async def _receive(self) -> None:
        while True:
            parts = await self._socket.recv_multipart()
            if len(parts) != 2:
                log.warning("control: rejected message of %d frames", len(parts) - 1)
                continue
            client, frame = parts
            if len(frame) > MAX_CONTROL_FRAME:
                reason = (f"the request is {len(frame)} bytes, more than the {MAX_CONTROL_FRAME} "
                          "the control socket takes")
                log.warning("control: rejected request: %s", reason)
                self._refuse(client, frame, reason)
                continue
            try:
                request = decode(frame, ControlRequest, "control request")
            except MalformedFrame as exc:
                log.warning("control: rejected request: %s", exc)
                self._refuse(client, frame, str(exc))
                continue
            task = asyncio.create_task(self._answer(client, request))
            self._answering.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._answering.discard)

    def _refuse(self, client: bytes, frame: bytes, reason: str) -> None:
        """Answer a request refused unread, if its id can be read: the client learns why at once."""
        try:
            request_id = decode(frame, RequestId, "control request id").id
        except MalformedFrame:
            return  # no id to answer to: the log line is all there is
        self._send_nowait(client, encode(refusal(request_id, reason)), 0)

    async def _answer(self, client: bytes, request: ControlRequest) -> None:
        """Answer one request through the shared dispatch (dispatch.py), its stream keyed by this client."""
        key = (client, request.id)
        reply = await answer(self._master, request, lambda pattern, seconds: self._subscribe(key, pattern, seconds),
                             lambda request_id: self._end_stream((client, request_id)))
        await self._send(client, reply)

    def _subscribe(self, key: StreamKey, pattern: str, seconds: float | None) -> None:
        handle = self._master.bus.subscribe(pattern, lambda event: self._batches.queue(key, event))
        self._streams[key].append(handle)
        self._last_sent.setdefault(key[0], time.monotonic())
        if seconds is not None:
            asyncio.get_running_loop().call_later(seconds, self._end_stream, key)

    def _end_stream(self, key: StreamKey) -> None:
        """Drop one stream's subscriptions and queued events (unknown or ended streams are ignored)."""
        for handle in self._streams.pop(key, []):
            self._master.bus.unsubscribe(handle)
        self._batches.drop(key)

    def _send_events(self, key: StreamKey, events: list[Event]) -> None:
        client, request_id = key
        self._send_nowait(client, encode(ControlReply(request_id, events=events)), len(events))

    def _send_nowait(self, client: bytes, frame: bytes, events: int) -> None:
        """Send without waiting: a full queue drops the frame, a vanished client ends its streams.

        The asyncio socket reports both through the future it returns (done at
        once unless earlier sends are still queued), never by raising here.
        """
        if client in self._last_sent:
            self._last_sent[client] = time.monotonic()
        sent = cast("asyncio.Future[Any]", self._socket.send_multipart([client, frame], flags=zmq.NOBLOCK))
        if sent.done():
            self._sent(client, events, sent)
        else:
            sent.add_done_callback(lambda future: self._sent(client, events, future))

    def _sent(self, client: bytes, events: int, future: asyncio.Future[Any]) -> None:
        exc = None if future.cancelled() else future.exception()
        if exc is None:
            return
        if isinstance(exc, zmq.ZMQError) and exc.errno == errno.EHOSTUNREACH:
            self._end_client(client)
        elif events:  # a keep-alive that did not fit needs no mention
            self.dropped += events
            log.warning("control: dropped %d events for a slow client: %s", events, exc)

    async def _reap_vanished(self) -> None:
        """Probe each client whose streams have been quiet; the send fails if the client is gone."""
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            quiet_since = time.monotonic() - PROBE_SECONDS
            for client in {key[0] for key in self._streams}:
                if self._last_sent.get(client, 0.0) <= quiet_since:
                    self._send_nowait(client, KEEPALIVE, 0)

    def _end_client(self, client: bytes) -> None:
        for key in [k for k in self._streams if k[0] == client]:
            self._end_stream(key)
        self._last_sent.pop(client, None)

    async def _send(self, client: bytes, reply: ControlReply) -> Any:
        try:
            await self._socket.send_multipart([client, encode(reply)])
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            self._end_client(client)

