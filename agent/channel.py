"""The agent's end of the request channel: a DEALER with request/reply and pushed messages.

Every frame from the master must present the trusted master key, verify,
be fresh, and decrypt with our shared Box before anything in it is used.
When the master stops answering, the socket is closed and opened again
(ZeroMQ's "lazy pirate" pattern), so stale requests do not pile up in it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import zmq
import zmq.asyncio

from saltmarsh.pki.keys import Identity, curve_public
from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.crypto import PeerCipher
from saltmarsh.protocol.daemon import cancel_and_wait
from saltmarsh.protocol.envelope import parse_outer, seal, verify
from saltmarsh.protocol.errors import MalformedFrame, ProtocolError
from saltmarsh.protocol.freshness import ReplayGuard
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.messages import REPLY_KINDS, Hello, Message
from saltmarsh.protocol.transport import LinkHeartbeat, harden, keep_alive, reconnect_quickly

from .errors import MasterUnavailable
from .trust import MasterTrust

log = logging.getLogger(__name__)

PushHandler = Callable[[Message], None]


class RequestClient:
    """Sends signed, encrypted requests to the master and matches replies to them."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        identity: Identity,
        agent_id: str,
        trust: MasterTrust,
        limits: Limits,
        link: LinkHeartbeat,
        on_push: PushHandler,
    ) -> None:
        self._ctx = ctx
        self._link = link
        self._endpoint = endpoint
        self._identity = identity
        self._agent_id = agent_id
        self._trust = trust
        self._limits = limits
        self._on_push = on_push
        self._guard = ReplayGuard(limits.freshness_seconds)
        self._cipher: PeerCipher | None = None
        self._cipher_key: bytes | None = None
        self._pending: dict[bytes, asyncio.Future[Message]] = {}
        self._socket: zmq.asyncio.Socket | None = None
        self._receiver: asyncio.Task[None] | None = None
        # The heartbeat and the hello may both find the master gone at once: one reset at a time,
        # or the second would close the socket the first just opened and orphan its receiver.
        self._resetting = asyncio.Lock()
        self.rejected = 0

    def open(self) -> None:
        """Create and connect the DEALER socket and start receiving."""
        socket = self._ctx.socket(zmq.DEALER)
        harden(socket, self._limits)
        reconnect_quickly(socket)
        keep_alive(socket, self._link)  # also tells the master to drop its end of a dead path
        socket.connect(self._endpoint)
        self._socket = socket
        self._receiver = asyncio.create_task(self._receive(socket), name="request-receive")

    async def reset(self) -> None:
        """Close and reopen the socket (the master stopped answering).

        If no new socket can be had (libzmq's socket or file limit), the channel stays closed:
        the next request fails with MasterUnavailable and its caller resets again later. Raised
        from here, the error would end the caller's task, and the agent would never talk again.
        """
        async with self._resetting:
            await self.close()
            try:
                self.open()
            except zmq.ZMQError as exc:
                log.error("cannot open the request channel to %s (%s); retrying later", self._endpoint, exc)

    async def close(self) -> None:
        """Stop receiving, fail pending requests, close the socket."""
        if self._receiver is not None:
            await cancel_and_wait([self._receiver])
            self._receiver = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(MasterUnavailable("request channel closed"))
        self._pending.clear()
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    async def request(self, message: Message, timeout: float) -> Message:
        """Send ``message`` and return the master's reply; MasterUnavailable on timeout."""
        if self._socket is None:
            raise MasterUnavailable("request channel is not open")
        hello = message.KIND == Hello.KIND
        body = encode(message) if hello else self._peer_cipher().encrypt(encode(message))
        frame, nonce = seal(self._identity, self._agent_id, message.KIND, body, present_key=hello)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[nonce] = future
        try:
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for drops a cancellation that
            # arrives together with the reply, and the cancelled task (the heartbeat) then never
            # ends, so the agent hangs on SIGTERM.
            async with asyncio.timeout(timeout):
                await self._socket.send(frame)
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            raise MasterUnavailable(f"no reply to {message.KIND} within {timeout:.1f} s") from exc
        finally:
            self._pending.pop(nonce, None)

    def _peer_cipher(self) -> PeerCipher:
        key = self._trust.key
        if key is None:
            raise MasterUnavailable("the master's key is not known yet")
        if self._cipher is None or self._cipher_key != key:
            self._cipher = PeerCipher(self._identity.curve_private, curve_public(key))
            self._cipher_key = key
        return self._cipher

    async def _receive(self, socket: zmq.asyncio.Socket) -> None:
        while True:
            # Not copied out of libzmq's buffer: an image chunk is decoded straight from it.
            frames = await socket.recv_multipart(copy=False)
            try:
                self._dispatch([frame.buffer for frame in frames])
            except ProtocolError as exc:
                self.rejected += 1
                log.warning("rejected frame from the master: %s", exc)
            except Exception:  # a bug must not end this task: the agent would stay up but deaf
                log.exception("frame from the master failed inside the agent")

    def _dispatch(self, parts: list[memoryview]) -> None:
        if len(parts) != 1:
            raise MalformedFrame(f"{len(parts)} frames in one message, expected 1")
        outer = parse_outer(parts[0], self._limits)
        master_key = self._trust.check(outer.presented_key)
        header = verify(outer, master_key)
        self._trust.remember(master_key)
        self._guard.check(header.sender, header.ts, header.nonce)
        kind = REPLY_KINDS.get(header.kind)
        if kind is None:
            raise MalformedFrame(f"unknown reply kind {header.kind!r}")
        message = decode(self._peer_cipher().decrypt(header.body), kind, f"{header.kind} body")
        future = self._pending.get(header.reply_to) if header.reply_to else None
        if future is not None and not future.done():
            future.set_result(message)
        elif not header.reply_to:
            self._on_push(message)
