"""``/v1/events?tags=GLOB,GLOB&since=SEQ``: the bus's events over WebSocket, or Server-Sent Events.

The same path serves both: a WebSocket upgrade gets one JSON text message per event, any other GET
gets ``text/event-stream`` (``id:`` the sequence number, so a browser's EventSource resumes by
itself with Last-Event-ID). An event is ``{"seq", "tag", "data", "ts", "agent"}``: a WebSocket
message carries the events ready at once, ``{"events": [...]}`` (up to BATCH), an SSE ``data:``
line one event. A client whose ``since`` is older than the ring first gets ``{"gap": {"since",
"resumed_from"}}``; a client cut off for falling behind gets the close (WebSocket code 1008, the
reason in it; SSE: the connection closed), and the reason is logged.
The token needs ``events:read``, and sees of each family of tags only what its scopes let it read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import tornado.iostream
import tornado.web
import tornado.websocket

from saltmarsh.protocol.tags import pattern_fault

from .base import ApiError, authorize
from .events import MAX_PATTERNS, CutOff, EventRing, Numbered, Subscriber
from .tokens import ApiTokens

if TYPE_CHECKING:
    from .tokens import ApiToken

log = logging.getLogger(__name__)

BATCH = 500  # events written before the writer waits for the socket to take them
# After each write a writer gathers what arrives for this long before its next: under a steady stream
# one write per subscriber per LINGER rather than one per frame the agents send (the socket writes
# were a quarter of the master's loop at 2,000 events/s to 50 subscribers). An event after a quiet
# spell goes out at once.
LINGER_SECONDS = 0.002
POLICY_VIOLATION = 1008


class StreamRefused(Exception):
    """The stream is refused before it starts: status, code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def gap_message(since: int, oldest: int) -> str:
    """What a client that asked for events older than the ring gets first."""
    return msgspec.json.encode({"gap": {"since": since, "resumed_from": oldest}}).decode()


def parse_stream_query(handler: tornado.web.RequestHandler) -> tuple[list[str], int | None]:
    """The ``tags`` patterns and ``since`` of the request; StreamRefused (400) for bad ones."""
    try:
        tags = handler.get_query_argument("tags", "")
        since_text = handler.get_query_argument("since", "") or handler.request.headers.get("Last-Event-ID", "")
    except tornado.web.HTTPError as exc:  # bad UTF-8 in the query
        raise StreamRefused(400, "invalid", "the query is not UTF-8") from exc
    patterns = [p for p in tags.split(",") if p]
    if len(patterns) > MAX_PATTERNS:
        raise StreamRefused(400, "invalid", f"at most {MAX_PATTERNS} tag patterns")
    for pattern in patterns:
        fault = pattern_fault(pattern)
        if fault:
            raise StreamRefused(400, "invalid", f"tag pattern {pattern!r}: {fault}")
    if since_text and not since_text.isdigit():
        raise StreamRefused(400, "invalid", "since must be a sequence number")
    return patterns, int(since_text) if since_text else None


class EventsHandler(tornado.websocket.WebSocketHandler):
    """One subscriber, over WebSocket or SSE."""

    def initialize(self, tokens: ApiTokens, ring: EventRing, backlog: int) -> None:
        """Given by the application."""
        self.tokens, self.ring, self.backlog = tokens, ring, backlog
        self.subscriber: Subscriber | None = None
        self.since: int | None = None
        self.pump: asyncio.Task[None] | None = None
        self.token_name = "-"
        self.listening_from = 0
        self._stop_listening: Any = None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Authenticate, then upgrade to WebSocket or stream SSE."""
        try:
            token = self._authorize()
            patterns, self.since = parse_stream_query(self)
        except StreamRefused as exc:
            self.set_status(exc.status)
            self.set_header("Content-Type", "application/json")
            self.finish(msgspec.json.encode({"error": {"code": exc.code, "message": exc.message}}))
            return
        self.subscriber = Subscriber(self.ring, token, patterns, self._cut_off, self.backlog)
        # Listening before the client learns it is subscribed (the 101, or the SSE headers): an event it
        # causes right after is never missed; none falls between the replay and the live ones either.
        self.listening_from = self.ring.seq
        self._stop_listening = self.ring.listen(self.subscriber.offer)
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await super().get(*args, **kwargs)
        else:
            await self._serve_sse()

    def _authorize(self) -> ApiToken:
        try:
            token = authorize(self, self.tokens, "events:read")
        except ApiError as exc:
            raise StreamRefused(exc.status, exc.code, exc.message) from exc
        self.token_name = token.name
        return token

    # ----- WebSocket -----

    def open(self, *args: str, **kwargs: str) -> None:
        """Start sending."""
        log.info("http: events over WebSocket for token=%s", self.token_name)
        self.pump = asyncio.create_task(self._pump(self._send_ws, self._send_ws_text))

    async def _send_ws(self, events: list[Numbered]) -> None:
        # One message per batch: per-message framing in Python, times every subscriber, was the limit.
        await self.write_message('{"events":[' + ",".join(n.json() for n in events) + "]}")
        # Awaited: the socket took them. The next batch waits; the queue (bounded) fills meanwhile.

    async def _send_ws_text(self, text: str) -> None:
        await self.write_message(text)

    def on_message(self, message: str | bytes) -> None:
        """Clients send nothing; what they send is ignored."""

    def on_close(self) -> None:
        """Stop sending."""
        self._unlisten()
        if self.pump is not None:
            self.pump.cancel()

    # ----- Server-Sent Events -----

    async def _serve_sse(self) -> None:
        log.info("http: events over SSE for token=%s", self.token_name)
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        await self.flush()  # the headers: the client is subscribed from here on
        self.pump = asyncio.create_task(self._pump(self._send_sse, self._send_sse_text))
        with contextlib.suppress(asyncio.CancelledError, tornado.iostream.StreamClosedError):
            await self.pump
        if not self._finished:
            self.finish()

    async def _send_sse(self, events: list[Numbered]) -> None:
        self.write("".join(f"id: {n.seq}\ndata: {n.json()}\n\n" for n in events).encode())
        await self.flush()

    async def _send_sse_text(self, text: str) -> None:
        self.write(f"data: {text}\n\n".encode())
        await self.flush()

    def on_connection_close(self) -> None:
        """The SSE client went away (WebSocket's own close ends in on_close)."""
        super().on_connection_close()
        self._unlisten()
        if self.pump is not None:
            self.pump.cancel()

    # ----- both -----

    def _cut_off(self, reason: str) -> None:
        """Drop a subscriber that fell behind: stop its writer and close its connection, with the reason."""
        log.warning("http: events for token=%s cut off: %s", self.token_name, reason)
        if self.pump is not None:
            self.pump.cancel()
        if self.ws_connection is not None:
            self.close(POLICY_VIOLATION, reason[:120])  # tornado aborts the stream if the close is never read
        else:
            self.request.connection.close()  # type: ignore[union-attr]

    async def _pump(self, send: Callable[[list[Numbered]], Awaitable[None]],
                    send_text: Callable[[str], Awaitable[None]]) -> None:
        subscriber = self.subscriber
        assert subscriber is not None
        last = self.listening_from
        try:
            if self.since is not None:
                oldest = self.ring.oldest()
                if self.since + 1 < oldest:
                    await send_text(gap_message(self.since, oldest))
                missed = [n for n in self.ring.since(self.since) if n.seq <= last and subscriber.wants(n)]
                for start in range(0, len(missed), BATCH):
                    await send(missed[start:start + BATCH])
            while True:
                await send(await subscriber.take(BATCH))
                await asyncio.sleep(LINGER_SECONDS)
        except CutOff:
            pass  # _cut_off closed the connection
        except (tornado.iostream.StreamClosedError, tornado.websocket.WebSocketClosedError):
            pass  # the client went away
        finally:
            self._unlisten()

    def _unlisten(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None

    def on_finish(self) -> None:
        """A refused upgrade, or the end of an SSE stream: no more events for this client.

        (An accepted upgrade finishes its 101 response too; that stream ends in on_close.)
        """
        if self.ws_connection is None:
            self._unlisten()
