"""The request channel: agents' DEALERs talk to this ROUTER.

Every frame is checked in this order, and the first failure is logged as one
line naming the peer address and the reason, then dropped (never a crash):
size -> envelope shape -> sender id -> signature (accepted key, or the
presented key for key submission only) -> header -> key state -> freshness ->
decryption -> body schema.

What a peer that is not accepted can make the master hold is bounded: a
frame from a key that is not accepted and is not key submission is refused
before its nonce is recorded; key submissions have a replay cache of their
own, so a flood of them cannot fill the one accepted agents' frames use; the
X25519 Box of each key is kept in a bounded LRU; and the rejection lines are
rate-limited per reason (protocol/ratelimit.py) while ``rejected`` counts
every one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio

from saltmarsh.pki.errors import InvalidAgentId
from saltmarsh.pki.ids import validate_agent_id
from saltmarsh.pki.keys import Identity, curve_public
from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.crypto import Cipher, PeerCipher, PlainCipher
from saltmarsh.protocol.envelope import Header, Outer, parse_outer, seal, verify
from saltmarsh.protocol.errors import MalformedFrame, ProtocolError, UnknownSender
from saltmarsh.protocol.freshness import ReplayGuard
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.messages import REQUEST_KINDS, Hello, Message, Refused
from saltmarsh.protocol.ratelimit import LogRateLimit
from saltmarsh.protocol.transport import harden, tcp_endpoint

from .publisher import MASTER_SENDER

log = logging.getLogger(__name__)

# Enough that a slow request (a manifest being hashed) blocks no one; few enough that a burst of
# event batches cannot pile up decoded in memory (each in-flight batch holds up to 500 events).
MAX_IN_FLIGHT = 16
# pyzmq's own advice: below about 64 KiB, copying costs less than tracking a zero-copy frame.
ZERO_COPY_MIN = 64 * 1024
# X25519 Boxes kept: more than the accepted agents one master serves, so that they never miss;
# anyone else's key (every fresh key of a flood gets a Refused or a Welcome) only evicts old ones.
MAX_CIPHERS = 4096


@dataclass(frozen=True)
class Request:
    """An authenticated, decrypted request from an agent."""

    agent_id: str
    routing_id: bytes
    header: Header
    body: Message
    public_key: bytes
    accepted: bool
    peer: str = ""  # the sender's address as libzmq reports it ("" if unknown)


Handler = Callable[[Request], Awaitable[Message | None]]


class Unaccepted(ProtocolError):
    """A key that is not accepted tried to do something other than submit itself."""


class RequestChannel:
    """ROUTER socket, authentication of every frame, and dispatch to handlers by kind."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        identity: Identity,
        accepted_key: Callable[[str], bytes | None],
        limits: Limits,
    ) -> None:
        self._identity = identity
        self._accepted_key = accepted_key
        self._limits = limits
        self._guard = ReplayGuard(limits.freshness_seconds, max_entries=limits.max_nonces)
        self._hello_guard = ReplayGuard(limits.freshness_seconds, max_entries=limits.max_nonces)
        self._ciphers: collections.OrderedDict[bytes, PeerCipher] = collections.OrderedDict()
        self._reject_log = LogRateLimit(log)
        self._handlers: dict[str, Handler] = {}
        self._socket = ctx.socket(zmq.ROUTER)
        harden(self._socket, limits)
        self._in_flight: set[asyncio.Task[None]] = set()
        self.rejected = 0
        self.rejected_by: collections.Counter[str] = collections.Counter()  # by reason (the error's kind)
        self.handled: collections.Counter[str] = collections.Counter()  # by kind, for `master.ping`

    def bind(self, interface: str, port: int) -> None:
        """Bind the ROUTER socket."""
        self._socket.bind(tcp_endpoint(interface, port))

    def on(self, kind: str, handler: Handler) -> None:
        """Route requests of ``kind`` to ``handler``."""
        self._handlers[kind] = handler

    def close(self) -> None:
        """Close the socket."""
        self._socket.close(linger=0)

    async def serve(self) -> None:
        """Receive frames until cancelled; each is answered in its own task.

        One slow request (a file manifest being hashed) must not hold up every
        other agent's, so requests do not wait for each other; the semaphore
        bounds how many are in hand at once, so a flood cannot grow memory.
        """
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        while True:
            await slots.acquire()
            try:
                parts = await self._socket.recv_multipart(copy=False)
            except BaseException:
                slots.release()
                raise
            task = asyncio.create_task(self._answer(parts))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            task.add_done_callback(lambda _task: slots.release())

    async def _answer(self, parts: list[zmq.Frame]) -> None:
        peer = _peer_address(parts[-1])
        if len(parts) != 2:
            self._reject(peer, MalformedFrame(f"{len(parts) - 1} frames in one message, expected 1"))
            return
        try:
            await self._handle(parts[0].bytes, parts[1].bytes, peer)
        except (ProtocolError, InvalidAgentId) as exc:
            self._reject(peer, exc)
        except Exception:  # a bug in a handler must not take the channel down
            log.exception("request from %s failed inside the master", peer)

    def _reject(self, peer: str, exc: Exception) -> None:
        self.rejected += 1
        self.rejected_by[type(exc).__name__] += 1
        self._reject_log.warning(type(exc).__name__, "rejected frame from %s: %s", peer, exc)

    async def _handle(self, routing_id: bytes, frame: bytes, peer: str = "") -> None:
        outer = parse_outer(frame, self._limits)
        # The id becomes a key file's name and a tag part: refuse it before anything looks it up.
        validate_agent_id(outer.sender)
        header, public_key, accepted = self._authenticate(outer)
        if not accepted and header.kind != Hello.KIND:
            # Refused before its nonce is recorded: it is answered the same way however often it comes.
            await self.send(routing_id, public_key, Refused(reason="key not accepted"), header.nonce)
            raise Unaccepted(f"{header.sender!r} sent {header.kind!r} but its key is not accepted: "
                             "an unaccepted key may only submit itself")
        (self._guard if accepted else self._hello_guard).check(header.sender, header.ts, header.nonce)
        kind = REQUEST_KINDS.get(header.kind)
        if kind is None:
            raise MalformedFrame(f"unknown request kind {header.kind!r}")
        plain = self._cipher_for(header.kind, public_key).decrypt(header.body)
        body = decode(plain, kind, f"{header.kind} body")
        self.handled[header.kind] += 1
        handler = self._handlers[header.kind]
        reply = await handler(Request(header.sender, routing_id, header, body, public_key, accepted, peer))
        if reply is not None:
            await self.send(routing_id, public_key, reply, header.nonce)

    def _authenticate(self, outer: Outer) -> tuple[Header, bytes, bool]:
        accepted = self._accepted_key(outer.sender)
        if accepted is not None and outer.presented_key in (b"", accepted):
            return verify(outer, accepted), accepted, True
        if outer.presented_key:
            # Signed by the key it presents: proves possession, grants nothing but submission.
            return verify(outer, outer.presented_key), outer.presented_key, False
        raise UnknownSender(f"no accepted key for {outer.sender!r} and none presented")

    def _cipher_for(self, kind: str, public_key: bytes) -> Cipher:
        if kind == Hello.KIND:
            return PlainCipher()
        return self.peer_cipher(public_key)

    def peer_cipher(self, public_key: bytes) -> PeerCipher:
        """The Box shared with the holder of ``public_key`` (the X25519 step is done once)."""
        cipher = self._ciphers.get(public_key)
        if cipher is not None:
            self._ciphers.move_to_end(public_key)
            return cipher
        try:
            peer = curve_public(public_key)
        except Exception as exc:  # pynacl raises several types for a bad point
            raise MalformedFrame("presented key cannot be converted for encryption") from exc
        cipher = self._ciphers[public_key] = PeerCipher(self._identity.curve_private, peer)
        if len(self._ciphers) > MAX_CIPHERS:
            self._ciphers.popitem(last=False)
        return cipher

    async def send(self, routing_id: bytes, public_key: bytes, message: Message, reply_to: bytes = b"") -> None:
        """Seal ``message`` for the holder of ``public_key`` and send it to ``routing_id``."""
        body = self.peer_cipher(public_key).encrypt(encode(message))
        frame, _ = seal(self._identity, MASTER_SENDER, message.KIND, body, reply_to=reply_to, present_key=True)
        # A large frame (an image chunk) is handed to libzmq without a copy; small ones are cheaper copied.
        await self._socket.send_multipart([routing_id, frame], copy=len(frame) < ZERO_COPY_MIN)


def _peer_address(frame: zmq.Frame) -> str:
    try:
        return str(frame.get("Peer-Address"))
    except zmq.ZMQError:
        return "unknown peer"
