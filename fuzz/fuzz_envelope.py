"""Fuzz target: the master's request channel on untrusted input, from the envelope to the body schema.

    .venv/bin/python fuzz/fuzz_envelope.py -runs=100000
    .venv/bin/python fuzz/fuzz_envelope.py -max_total_time=300 -artifact_prefix=/tmp/ \
        CORPUS_DIR fuzz/seeds fuzz/regressions
    .venv/bin/python fuzz/fuzz_envelope.py --write-seeds fuzz/seeds   # after a schema changes

libFuzzer sees no coverage inside msgspec (C), so it cannot learn msgpack
from scratch: fuzz/seeds holds one well-formed input per mode and message
kind to start from.

libFuzzer writes a crashing input to ./crash-<sha1> unless -artifact_prefix
says where; add it to fuzz/regressions/ once fixed, so that the smoke test
and tests/test_properties.py replay it from then on.

atheris (libFuzzer for Python; in the ``test`` extras) mutates inputs and
watches coverage. Every input goes through the real RequestChannel of
master/wire/request_channel.py, the code that reads what agents send: frame count,
size, envelope, sender id, signature, header, key state, freshness,
decryption and body schema, then dispatch to handlers. The handlers here are
no-ops (the key store, job router and file server are not under test). An
input may be refused, never make the channel fail inside: a "failed inside
the master" record, or any exception escaping the channel, is a crash.

Random bytes never carry a valid signature, so the first byte of an input
picks how much of it is signed properly by a key the channel accepts, and so
the fuzzer also reaches the header decoder and every body schema:

    0  the rest is the frame                  3  a valid header, the rest is the (encrypted) body
    1  the rest is split into several frames  4  key submission: the rest is the plaintext hello body
    2  the rest is the signed header          5  an unaccepted key sends a request of any kind
    6  the rest is decoded as every message schema directly (codec.decode)

tests/test_properties.py drives the same Harness with hypothesis, and
tests/test_fuzz_smoke.py runs this file for a bounded time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import time
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from saltmarsh.master.wire.request_channel import Request, RequestChannel
from saltmarsh.pki.keys import Identity, curve_public
from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.crypto import PeerCipher
from saltmarsh.protocol.digest import digest
from saltmarsh.protocol.envelope import SignedHeader, sign_frame
from saltmarsh.protocol.errors import MalformedFrame
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.messages import REPLY_KINDS, REQUEST_KINDS, Hello, Job, Message
from saltmarsh.protocol.version import PROTOCOL_VERSION

ROUTING_ID = b"\x00fuzz"
AGENT = "hv1"
KINDS = [*sorted(REQUEST_KINDS), "bogus"]
SCHEMAS: list[type[Any]] = [*REQUEST_KINDS.values(), *REPLY_KINDS.values(), Job]


class FailedInside(Exception):
    """An input made the request channel fail inside (a bug) instead of refusing it."""


class _Failures(logging.Handler):
    """Keeps every record logged with a traceback: that is how the channel reports its own failures."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Harness:
    """A real RequestChannel (unbound ROUTER, no-op handlers) fed one input at a time."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.ctx = zmq.asyncio.Context()
        self.master = Identity.generate()
        self.agent = Identity.generate()
        self.stranger = Identity.generate()
        self.limits = limits or Limits()
        self.channel = RequestChannel(self.ctx, self.master, self._accepted_key, self.limits)
        for kind in REQUEST_KINDS:
            self.channel.on(kind, self._handled)
        master_curve = curve_public(self.master.public_key)
        self._box = PeerCipher(self.agent.curve_private, master_curve)
        self._stranger_box = PeerCipher(self.stranger.curve_private, master_curve)
        self._counter = 0
        self.handled = 0
        self._failures = _Failures()
        self._log = logging.getLogger("saltmarsh.master.wire.request_channel")
        self._log_was = (self._log.level, self._log.propagate)
        self._log.addHandler(self._failures)
        # Refusals are the expected outcome: keep them out of the output (and the time) of a run.
        self._log.setLevel(logging.ERROR)
        self._log.propagate = False

    def _accepted_key(self, agent_id: str) -> bytes | None:
        return self.agent.public_key if agent_id == AGENT else None

    async def _handled(self, req: Request) -> Message | None:
        expected = REQUEST_KINDS[req.header.kind]
        if not isinstance(req.body, expected):
            raise AssertionError(f"{req.header.kind} handler got {type(req.body).__name__}")
        self.handled += 1
        return None

    def close(self) -> None:
        """Close the channel, its context and loop; the channel's logger is as it was."""
        self._log.removeHandler(self._failures)
        self._log.setLevel(self._log_was[0])
        self._log.propagate = self._log_was[1]
        self.channel.close()
        self.ctx.term()
        self.loop.close()

    def feed(self, data: bytes) -> None:
        """Put one input through the channel; FailedInside if the channel failed rather than refused."""
        if data[:1] and data[0] % 7 == 6:
            self.decode_everything(data[1:])
            return
        self.answer(self.frames(data))

    def frames(self, data: bytes) -> list[bytes]:
        """The frames (after the routing id) that input ``data`` stands for (see the module docstring)."""
        if not data:
            return [b""]
        mode, rest = data[0] % 7, data[1:]
        if mode == 0:
            return [rest]
        if mode == 1:
            return rest.split(b"\xff\xfe")
        if mode == 2:
            return [encode([AGENT, b"", rest, self.agent.sign(rest), b""])]
        if mode == 3:
            kind = KINDS[rest[0] % len(KINDS)] if rest else "heartbeat"
            return [self._sealed(self.agent, self._box, kind, rest[1:], present=kind == Hello.KIND)]
        if mode == 4:
            return [self._sealed(self.agent, None, Hello.KIND, rest, present=True)]
        kind = KINDS[rest[0] % len(KINDS)] if rest else "heartbeat"
        return [self._sealed(self.stranger, self._stranger_box, kind, rest[1:], present=True, sender="stranger")]

    def answer(self, parts: list[bytes]) -> None:
        """Run the channel's own handling of one received message (routing id prepended)."""
        frames = [zmq.Frame(ROUTING_ID), *(zmq.Frame(p) for p in parts)]
        self.loop.run_until_complete(self.channel._answer(frames))
        if self._failures.records:
            record = self._failures.records[0]
            self._failures.records.clear()
            raise FailedInside(self._failures.format(record))

    def decode_everything(self, data: bytes) -> None:
        """Decode ``data`` as every message schema; anything but MalformedFrame escaping is a bug."""
        for schema in SCHEMAS:
            try:
                message = decode(data, schema)
            except MalformedFrame:
                continue
            # whatever decodes must survive a round trip unchanged
            if decode(encode(message), schema) != message:
                raise FailedInside(f"{schema.__name__} decoded from {data!r} does not round-trip")

    def _sealed(self, identity: Identity, box: PeerCipher | None, kind: str, plain: bytes, *,
                present: bool, sender: str = AGENT) -> bytes:
        body = box.encrypt(plain) if box is not None and kind != Hello.KIND else plain
        self._counter += 1
        # Distinct, reproducible nonces: an input is refused for what it is, not as a replay.
        nonce = hashlib.blake2b(self._counter.to_bytes(8, "big"), digest_size=16).digest()
        header = SignedHeader(PROTOCOL_VERSION, kind, sender, time.time(), nonce, b"", b"",
                              digest(body))
        return sign_frame(identity, header, body, present_key=present)


def seeds() -> dict[str, bytes]:
    """Well-formed inputs to start from: every message kind through the modes that reach its schema."""
    from saltmarsh.protocol.jids import new_jid
    from saltmarsh.protocol.messages import (
        AgentEvent,
        CertRequest,
        CrlRequest,
        Events,
        FileRead,
        FileStat,
        Heartbeat,
        JobReturn,
        Returns,
        Target,
    )

    jid = new_jid()
    requests: list[Message] = [
        Hello(labels={"zone": "a"}, version="0.1.0", token=b"t" * 48), Heartbeat(key_id=b"k" * 8),
        Returns(returns=[JobReturn(jid=jid, fun="test.ping", success=True, result={"a": [1, 2.5, None]})]),
        Events(events=[AgentEvent(tag="saltmarsh/virt/hv1/x", data={"k": "v"}, ts=1.0)]),
        FileStat(path="images/base.img"), FileRead(path="images/base.img", index=3),
        CertRequest(server_csr=b"-----BEGIN CERTIFICATE REQUEST-----\n", client_csr=b""), CrlRequest(),
    ]
    found = {f"{mode}-{m.KIND}": bytes([mode, KINDS.index(m.KIND)]) + encode(m) for m in requests for mode in (3, 5)}
    found["4-hello"] = b"\x04" + encode(requests[0])
    job = Job(jid=jid, fun="test.echo", target=Target(kind="glob", pattern="hv*"), args=[1], kwargs={"a": b"b"})
    for message in [*requests, job]:
        found[f"6-{message.KIND}"] = b"\x06" + encode(message)
    found["2-header"] = b"\x02" + encode(SignedHeader(PROTOCOL_VERSION, "heartbeat", AGENT, 1.0, b"n" * 16, b"", b"",
                                                      digest(b"")))
    return found


def main(argv: list[str]) -> None:
    """Run libFuzzer over Harness.feed with ``argv`` (libFuzzer's own options)."""
    import atheris

    # Coverage of every Python function loaded by now: ours (protocol, pki, master) and the
    # pure-Python parts of pyzmq and pynacl; msgspec and libsodium are C and stay opaque.
    atheris.instrument_all()
    harness = Harness()
    print(f"fuzzing the request channel with msgspec {msgspec.__version__}", file=sys.stderr)
    atheris.Setup(argv, harness.feed)
    atheris.Fuzz()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write-seeds"]:
        from pathlib import Path

        for name, seed in seeds().items():
            (Path(sys.argv[2]) / name).write_bytes(seed)
    else:
        main(sys.argv)
