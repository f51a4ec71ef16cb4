"""Hand-made peers for the security tests: real keys, real ZeroMQ sockets, real frames.

Frames are built with the protocol's own seal/encode/PeerCipher, exactly as a
real agent or master builds them, so that a test can then change one thing
(the key that signs, a byte, the timestamp, the size) and show that the other
end refuses exactly that. Nothing here replaces a part of saltmarsh.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import zmq

from saltmarsh.pki.keys import Identity, curve_public
from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.crypto import PeerCipher, SessionKey
from saltmarsh.protocol.digest import digest
from saltmarsh.protocol.envelope import (
    NONCE_SIZE,
    Header,
    Outer,
    SignedHeader,
    parse_outer,
    seal,
    sign_frame,
    verify,
)
from saltmarsh.protocol.jids import new_jid
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.messages import (
    REPLY_KINDS,
    REQUEST_KINDS,
    Ack,
    AgentEvent,
    Events,
    Hello,
    Job,
    JobReturn,
    Message,
    Returns,
    Target,
    Welcome,
)
from saltmarsh.protocol.version import PROTOCOL_VERSION

from .cluster import BIN, Cluster, Daemon, wait_until

REJECTED = "rejected frame from"


# ---- keys on disk ---------------------------------------------------------------------


def master_identity(master_dir: Path) -> Identity:
    """The master's private identity, as the master wrote it under its root_dir."""
    return Identity.load(master_dir / "state" / "pki" / "master.key")


def agent_identity(daemon: Daemon) -> Identity:
    """A real agent's private identity, as the agent wrote it under its root_dir."""
    return Identity.load(daemon.config_dir / "state" / "pki" / "agent.key")


def session_key_bytes(master_dir: Path) -> bytes:
    """The master's current publish session key (its file under root_dir)."""
    return (master_dir / "state" / "pki" / "session.key").read_bytes()


# ---- frames -----------------------------------------------------------------------------


def box(own: Identity, peer_public: bytes) -> PeerCipher:
    """The X25519 Box between ``own`` and the holder of ``peer_public`` (as both daemons build it)."""
    return PeerCipher(own.curve_private, curve_public(peer_public))


def request_frame(identity: Identity, sender: str, message: Message, master_public: bytes,
                  *, present_key: bool = False, cipher_identity: Identity | None = None) -> tuple[bytes, bytes]:
    """Seal ``message`` the way agent/channel.py does; return (frame, nonce).

    ``cipher_identity`` encrypts with another key than the one that signs (a forger who
    somehow holds the victim's shared key: only the signature is then wrong).
    """
    if message.KIND == Hello.KIND:
        body = encode(message)
        present_key = True
    else:
        body = box(cipher_identity or identity, master_public).encrypt(encode(message))
    return seal(identity, sender, message.KIND, body, present_key=present_key)


def handmade_frame(identity: Identity, sender: str, kind: str, body: bytes, *, ts: float,
                   nonce: bytes | None = None, key_id: bytes = b"", reply_to: bytes = b"",
                   present_key: bool = False) -> tuple[bytes, bytes]:
    """Like envelope.seal, but with the timestamp (and nonce) chosen by the caller."""
    nonce = nonce or os.urandom(NONCE_SIZE)
    header = SignedHeader(PROTOCOL_VERSION, kind, sender, ts, nonce, reply_to, key_id, digest(body))
    return sign_frame(identity, header, body, present_key=present_key), nonce


def flip_byte(frame: bytes, offset: int) -> bytes:
    """``frame`` with the byte at ``offset`` inverted."""
    return frame[:offset] + bytes([frame[offset] ^ 0xFF]) + frame[offset + 1:]


def returns_message(jid: str, result: Any, fun: str = "test.ping") -> Returns:
    """A Returns batch holding one successful return."""
    return Returns(returns=[JobReturn(jid=jid, fun=fun, success=True, result=result)])


def events_message(tag: str, data: Any = None) -> Events:
    """An Events batch holding one event."""
    return Events(events=[AgentEvent(tag=tag, data=data, ts=time.time())])


# ---- a hand-driven agent on a raw DEALER ---------------------------------------------------


class RawAgent:
    """A raw DEALER socket on the master's request port, driven frame by frame."""

    def __init__(self, ctx: zmq.Context[Any], port: int, identity: Identity, agent_id: str,
                 master_public: bytes) -> None:
        self.identity = identity
        self.agent_id = agent_id
        self.master_public = master_public
        self.pushed: list[Message] = []
        self.socket = ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(f"tcp://127.0.0.1:{port}")

    def send_frame(self, frame: bytes) -> None:
        """Send one raw frame."""
        self.socket.send(frame)

    def send(self, message: Message, *, present_key: bool = False) -> bytes:
        """Seal and send ``message`` as this agent; return its nonce."""
        frame, nonce = request_frame(self.identity, self.agent_id, message, self.master_public,
                                     present_key=present_key)
        self.socket.send(frame)
        return nonce

    def recv(self, timeout: float = 5.0) -> tuple[Header, Message] | None:
        """The next reply, verified with the master key and decrypted; None after ``timeout``."""
        if not self.socket.poll(int(timeout * 1000)):
            return None
        outer = parse_outer(self.socket.recv(), Limits())
        assert outer.presented_key == self.master_public, "reply not from the master under test"
        header = verify(outer, self.master_public)
        plain = box(self.identity, self.master_public).decrypt(header.body)
        return header, decode(plain, REPLY_KINDS[header.kind], header.kind)

    def reply_to(self, nonce: bytes, timeout: float = 5.0) -> Message:
        """The reply to the request with ``nonce``; fails if a reply to another request comes first.

        Messages the master pushes unasked (reply_to empty: a new session key) are kept in ``pushed``.
        """
        deadline = time.monotonic() + timeout
        while True:
            got = self.recv(max(0.0, deadline - time.monotonic()))
            assert got is not None, f"no reply from the master within {timeout} s"
            header, message = got
            if not header.reply_to:
                self.pushed.append(message)
                continue
            assert header.reply_to == nonce, f"unexpected reply {message!r} (to another request)"
            return message

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(linger=0)


def register_raw_agent(cluster: Cluster, ctx: zmq.Context[Any], agent_id: str,
                       identity: Identity | None = None, accept: bool = True) -> RawAgent:
    """Submit a fresh key for ``agent_id`` over a raw DEALER and (by default) accept it with the CLI."""
    agent = RawAgent(ctx, cluster.request_port, identity or Identity.generate(), agent_id,
                     master_identity(cluster.master_dir).public_key)
    welcome = agent.reply_to(agent.send(Hello()))
    assert isinstance(welcome, Welcome) and welcome.state == "pending", welcome
    if accept:
        cluster.cli("key", "accept", agent_id)
        welcome = agent.reply_to(agent.send(Hello()))
        assert isinstance(welcome, Welcome) and welcome.state == "accepted" and len(welcome.session_key) == 32
    return agent


def silent_job(cluster: Cluster, agent_id: str) -> str:
    """Run test.ping on ``agent_id`` (which nobody answers) and return the job's jid."""
    result = cluster.cli("run", agent_id, "test.ping", "--timeout", "0.2", check=False)
    match = re.search(r"did not answer job ([0-9]{20,26})", result.stderr)
    assert match, result.stderr
    return match.group(1)


# ---- logs --------------------------------------------------------------------------------


def count(daemon: Daemon, text: str) -> int:
    """How many lines of the daemon's log contain ``text``."""
    return sum(text in line for line in daemon.log().splitlines())


def lines(daemon: Daemon, pattern: str) -> list[str]:
    """Lines of the daemon's log matching the regular expression ``pattern``."""
    return [line for line in daemon.log().splitlines() if re.search(pattern, line)]


def wait_count(daemon: Daemon, text: str, n: int, timeout: float = 10.0) -> None:
    """Wait until ``text`` occurs on at least ``n`` lines, then check it is exactly ``n``."""
    wait_until(lambda: count(daemon, text) >= n, timeout=timeout,
               what=f"{n} lines with {text!r} in the {daemon.name} log")
    assert count(daemon, text) == n, f"{count(daemon, text)} lines with {text!r}, expected {n}"


# ---- the master's event stream, as an operator sees it ------------------------------------


class EventWatch:
    """``saltmarsh events --json`` as a subprocess, every event it prints kept in order."""

    def __init__(self, cluster: Cluster, pattern: str = "") -> None:
        self._events: list[dict[str, Any]] = []
        self._probes: set[str] = set()
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [str(BIN / "saltmarsh"), "-c", str(cluster.master_dir), "events", "--json", pattern],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._lock:
                self._events.append(json.loads(line))

    @property
    def events(self) -> list[dict[str, Any]]:
        """Events seen since ``sync``, without its probes."""
        with self._lock:
            return [e for e in self._events if e["tag"] not in self._probes]

    def tags(self) -> list[str]:
        """Tags of the events seen since ``sync``."""
        return [e["tag"] for e in self.events]

    def wait_tag(self, tag: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for an event with ``tag`` and return it."""
        def found() -> dict[str, Any] | None:
            return next((e for e in self.events if e["tag"] == tag), None)
        return wait_until(found, timeout=timeout, what=f"event {tag}")  # type: ignore[no-any-return]

    def sync(self, agent: RawAgent) -> None:
        """Make sure the stream is subscribed: fire a probe event until it shows up."""
        probe = f"probe/{uuid.uuid4().hex}"
        with self._lock:
            self._probes.add(probe)

        def seen() -> bool:
            agent.reply_to(agent.send(events_message(probe)))
            with self._lock:
                return any(e["tag"] == probe for e in self._events)
        wait_until(seen, timeout=10, interval=0.2, what="the event stream to be subscribed")
        with self._lock:
            self._events.clear()  # later copies of the probe are filtered out by tag

    def close(self) -> None:
        """Stop the subprocess."""
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# ---- a TCP relay that records what crosses the wire ------------------------------------------


class RecordingRelay:
    """Listens on a free loopback port, relays every connection to ``upstream_port``, keeps the bytes."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._recorded = bytearray()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def recorded(self) -> bytes:
        """Every byte relayed so far, in both directions."""
        with self._lock:
            return bytes(self._recorded)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self._upstream))
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    self._recorded += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop relaying."""
        self._closing.set()
        self._listener.close()
        for s in self._sockets:
            s.close()


def deep_value_msgpack(message: Message, depth: int) -> bytes:
    """msgpack of ``message`` with its ``DEEP`` string replaced by ``depth`` nested one-item arrays."""
    plain = encode(message)
    marker = encode(DEEP)
    assert plain.count(marker) == 1
    return plain.replace(marker, b"\x91" * depth + b"\xc0")


DEEP = "deep-value-marker-7f3a"


# ---- a fake master made of raw sockets, for the agent's end ---------------------------------


class FakeMaster:
    """A ROUTER and an XPUB bound on free loopback ports, with a key of its own.

    XPUB is a PUB that also reports subscriptions, so a test knows when an
    agent's SUB socket is listening instead of sleeping and hoping.
    """

    def __init__(self, ctx: zmq.Context[Any], identity: Identity | None = None) -> None:
        self.identity = identity or Identity.generate()
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.request_port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.pub = ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.publish_port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.session = SessionKey.generate()
        self.subscriptions: set[bytes] = set()
        self.agent_routing_id = b""
        self.agent_public = b""

    def wait_subscribed(self, *topics: bytes, timeout: float = 10.0) -> None:
        """Wait until the agent's SUB socket has subscribed to every topic in ``topics``."""
        deadline = time.monotonic() + timeout
        while not set(topics) <= self.subscriptions:
            remaining = deadline - time.monotonic()
            assert remaining > 0 and self.pub.poll(int(remaining * 1000)), f"no subscription to {topics}"
            message = self.pub.recv()
            if message[:1] == b"\x01":
                self.subscriptions.add(message[1:])

    def recv_request(self, timeout: float = 10.0) -> tuple[bytes, Outer, Header, bytes]:
        """The next request: (routing id, envelope, verified header, plaintext body).

        Verified with the presented key (hello) or ``self.agent_public`` (anything after).
        """
        assert self.router.poll(int(timeout * 1000)), f"no request from the agent within {timeout} s"
        routing_id, frame = self.router.recv_multipart()
        outer = parse_outer(frame, Limits())
        key = outer.presented_key or self.agent_public
        header = verify(outer, key)
        plain = header.body if header.kind == Hello.KIND else box(self.identity, key).decrypt(header.body)
        return routing_id, outer, header, plain

    def wait_hello(self, timeout: float = 10.0) -> tuple[bytes, Header]:
        """Wait for the agent's hello; remember its routing id and key."""
        routing_id, outer, header, _ = self.recv_request(timeout)
        assert header.kind == Hello.KIND, header.kind
        self.agent_routing_id, self.agent_public = routing_id, outer.presented_key
        return routing_id, header

    def reply_frame(self, message: Message, reply_to: bytes = b"") -> bytes:
        """A request-channel frame to the agent, sealed as master/wire/request_channel.py seals it."""
        body = box(self.identity, self.agent_public).encrypt(encode(message))
        frame, _ = seal(self.identity, "master", message.KIND, body, reply_to=reply_to, present_key=True)
        return frame

    def send_to_agent(self, *parts: bytes) -> None:
        """Send raw parts to the agent's DEALER (the routing id is prepended)."""
        self.router.send_multipart([self.agent_routing_id, *parts])

    def welcome(self, hello: Header) -> None:
        """Accept the agent: answer its hello with the session key."""
        self.send_to_agent(self.reply_frame(
            Welcome(state="accepted", session_key=self.session.key, heartbeat_seconds=30.0), hello.nonce))

    def job_frame(self, job: Job, *, signer: Identity | None = None, ts: float | None = None) -> bytes:
        """A publish frame of ``job``, sealed with the session key as master/wire/publisher.py does."""
        body = self.session.cipher().encrypt(encode(job))
        if ts is None:
            frame, _ = seal(signer or self.identity, "master", Job.KIND, body, key_id=self.session.key_id)
            return frame
        frame, _ = handmade_frame(signer or self.identity, "master", Job.KIND, body, ts=ts,
                                  key_id=self.session.key_id)
        return frame

    def publish(self, *parts: bytes) -> None:
        """Send raw parts on the publish socket."""
        self.pub.send_multipart(list(parts))

    def serve_until(self, predicate: Any, timeout: float = 10.0) -> list[tuple[Header, Message]]:
        """Answer the agent's requests (Ack) until ``predicate(header, message)`` holds; return them all."""
        seen: list[tuple[Header, Message]] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the agent never sent the expected request; got {seen}"
            routing_id, _, header, plain = self.recv_request(remaining)
            message = decode(plain, REQUEST_KINDS[header.kind], header.kind)
            seen.append((header, message))
            if isinstance(message, Returns):
                ack = Ack(jids=[r.jid for r in message.returns])
            else:
                ack = Ack(key_id=self.session.key_id)
            self.router.send_multipart([routing_id, self.reply_frame(ack, header.nonce)])
            if predicate(header, message):
                return seen


def ping_job(agent_id: str, fun: str = "test.ping", args: list[Any] | None = None) -> Job:
    """A job for one agent with a fresh jid."""
    return Job(jid=new_jid(), fun=fun, target=Target(kind="id", ids=[agent_id]), args=args or [])


def returned(jid: str) -> Any:
    """A serve_until predicate: the agent sent the return of ``jid``."""
    return lambda header, message: isinstance(message, Returns) and any(r.jid == jid for r in message.returns)
