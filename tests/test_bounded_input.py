"""docs/architecture.md "Message security", property 7: bounded input on both ends, never a crash.

Malformed frames of every kind go to a real master's request port and, from a
fake master made of raw ZeroMQ sockets, to a real agent on both its channels.
Each must cost exactly one clear log line and nothing else: the daemon keeps
serving, shown by real work done after the garbage. Raw TCP garbage (not even
ZeroMQ) must not crash the master either.
"""

from __future__ import annotations

import os
import random
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from saltmarsh.master.control.client import MasterClient
from saltmarsh.pki.keys import Identity
from saltmarsh.protocol.codec import encode
from saltmarsh.protocol.digest import digest
from saltmarsh.protocol.envelope import Outer, SignedHeader, seal, sign_frame
from saltmarsh.protocol.messages import Heartbeat, Job, Returns, Welcome
from saltmarsh.protocol.version import PROTOCOL_VERSION

from .cluster import Cluster, Daemon, wait_until
from .wire import (
    DEEP,
    REJECTED,
    FakeMaster,
    RawAgent,
    agent_identity,
    box,
    deep_value_msgpack,
    lines,
    master_identity,
    ping_job,
    request_frame,
    returned,
    returns_message,
)

LIMIT = 65536
NESTING = 5000  # deeper than msgspec decodes (its recursion limit), far shallower than the frame limit


@pytest.fixture
def zctx() -> Iterator[zmq.Context[Any]]:
    """A ZeroMQ context for the test's own sockets."""
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def small(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A running master whose frame limit is LIMIT bytes, with one accepted agent hv1."""
    cluster = Cluster(tmp_path, max_frame_bytes=LIMIT)
    try:
        cluster.start_master()
        cluster.start_agents("hv1", max_frame_bytes=LIMIT)
        yield cluster
    finally:
        cluster.stop()
        if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
            for daemon in [cluster.master, *cluster.agents.values()]:
                print(f"----- {daemon.name} log -----\n{daemon.log()[-8000:]}")


def rejections(daemon: Daemon, text: str = "rejected") -> list[str]:
    """The daemon's log lines that record a refused frame."""
    return lines(daemon, re.escape(text))


def expect_rejections(daemon: Daemon, before: int, reasons: list[str], text: str = "rejected") -> None:
    """Wait for exactly one new rejection line per reason, in order, each matching its reason."""
    total = before + len(reasons)
    wait_until(lambda: len(rejections(daemon, text)) >= total, timeout=10,
               what=f"{len(reasons)} rejection lines in the {daemon.name} log")
    new = rejections(daemon, text)[before:]
    assert len(new) == len(reasons), "\n".join(new)
    for line, reason in zip(new, reasons, strict=True):
        assert re.search(reason, line), f"{line!r} does not match {reason!r}"


def exactly_sized(size: int, build: Any) -> bytes:
    """``build(padding)`` grown until its frame is exactly ``size`` bytes."""
    padding = size - 400
    for _ in range(10):
        frame: bytes = build(padding)
        if len(frame) == size:
            return frame
        padding += size - len(frame)
    raise AssertionError(f"could not build a frame of exactly {size} bytes")


# ---- the master -------------------------------------------------------------------------


def test_master_rejects_each_malformed_frame_once_and_keeps_serving(small: Cluster, zctx: zmq.Context[Any]) -> None:
    pub = master_identity(small.master_dir).public_key
    hv1 = agent_identity(small.agents["hv1"])
    raw = RawAgent(zctx, small.request_port, hv1, "hv1", pub)
    heartbeat, _ = request_frame(hv1, "hv1", Heartbeat(), pub)

    def signed(kind: str, plain: bytes, *, encrypt: bool = True, v: int = PROTOCOL_VERSION) -> bytes:
        """A frame hv1 really signs, around a body of our choosing."""
        body = box(hv1, pub).encrypt(plain) if encrypt else plain
        header = SignedHeader(v, kind, "hv1", time.time(), os.urandom(16), b"", b"", digest(body))
        return sign_frame(hv1, header, body)

    def signed_header_plus(extra: bytes) -> bytes:
        """A heartbeat whose signed header carries one more element than a header has."""
        frame = msgspec.msgpack.decode(heartbeat)
        fields = msgspec.msgpack.decode(frame[2])
        header = encode([*fields[:3], time.time(), os.urandom(16), *fields[5:], extra])
        return encode(Outer("hv1", b"", header, hv1.sign(header), frame[4]))

    def returns_body(**fields: Any) -> bytes:
        ret = {"jid": "2" * 20, "fun": "test.ping", "success": True, **fields}
        return encode({"returns": [ret]})

    deep = deep_value_msgpack(returns_message("2" * 20, DEEP), NESTING)
    oversized_signed = exactly_sized(LIMIT + 1, lambda n: request_frame(
        hv1, "hv1", returns_message("2" * 20, "x" * n), pub)[0])
    envelope = r"envelope (is not valid msgpack|violates its schema)"
    cases: list[tuple[list[bytes], str]] = [
        ([os.urandom(300)], envelope),
        ([b""], r"envelope is not valid msgpack"),
        ([b"\xff" * 64], envelope),
        ([b"\xc1" * 64], r"envelope is not valid msgpack"),
        ([heartbeat[: len(heartbeat) // 2]], r"envelope is not valid msgpack"),
        ([heartbeat[:-1]], r"envelope is not valid msgpack"),
        ([os.urandom(LIMIT + 1)], rf"frame of {LIMIT + 1} bytes exceeds the {LIMIT}-byte limit"),
        ([oversized_signed], rf"frame of {LIMIT + 1} bytes exceeds the {LIMIT}-byte limit"),
        ([heartbeat, b"extra"], r"2 frames in one message, expected 1"),
        ([b"a", b"b", b"c"], r"3 frames in one message, expected 1"),
        ([encode({"sender": "hv1", "signed": b"", "signature": b""})], r"envelope violates its schema"),
        ([encode([1, 2, 3, 4])], r"envelope violates its schema"),
        ([encode(["hv1", b"", b"x", b"\0" * 63, b""])], r"envelope violates its schema"),
        ([encode(["h" * 129, b"", b"x", b"\0" * 64, b""])], r"envelope violates its schema"),
        ([encode(["hv1", b"\1" * 33, b"x", b"\0" * 64, b""])], r"envelope violates its schema"),
        ([encode(["hv1", b"\1" * 5, b"x", b"\0" * 64, b""])], r"presented key is not an Ed25519 public key"),
        ([encode([*msgspec.msgpack.decode(heartbeat), b"sixth"])], r"envelope violates its schema"),
        ([encode(Outer("hv1", b"", b"\xc1header", hv1.sign(b"\xc1header"), b""))], r"header is not valid msgpack"),
        ([encode(Outer("hv1", b"", encode([1, "x"]), hv1.sign(encode([1, "x"])), b""))], r"header violates its schema"),
        ([signed_header_plus(b"ninth")], r"header violates its schema"),
        ([signed("returns", encode(returns_message("2" * 20, 1)), v=PROTOCOL_VERSION + 1)],
         rf"protocol version {PROTOCOL_VERSION + 1}, this end speaks {PROTOCOL_VERSION}"),
        ([signed("shutdown", b"{}")], r"unknown request kind 'shutdown'"),
        ([signed("returns", encode(returns_message("2" * 20, 1)), encrypt=False)],
         r"body does not decrypt with the expected key"),
        ([signed("returns", returns_body(extra=1))], r"returns body violates its schema"),
        ([signed("returns", returns_body(fun="f" * 200))], r"returns body violates its schema"),
        ([signed("returns", returns_body(jid="../../etc/passwd"))], r"returns body violates its schema"),
        ([signed("returns", returns_body(success="yes"))], r"returns body violates its schema"),
        ([signed("returns", encode({"returns": []}))], r"returns body violates its schema"),
        ([signed("events", encode({"events": [{"tag": "t"}] * 1001}))], r"events body violates its schema"),
        ([signed("heartbeat", encode({"key_id": "text, not bytes"}))], r"heartbeat body violates its schema"),
        ([signed("events", encode({"events": [{"tag": "t" * 600}]}))], r"events body violates its schema"),
        ([signed("returns", b"\xc1")], r"returns body is not valid msgpack"),
        ([signed("returns", deep)], r"returns body is nested too deeply"),
    ]
    before = len(rejections(small.master, REJECTED))
    with MasterClient.from_config_dir(small.master_dir) as client:
        counted_before = client.call("master.ping")["rejected_frames"]
    for parts, _ in cases:
        raw.socket.send_multipart(parts)
    expect_rejections(small.master, before, [reason for _, reason in cases], REJECTED)

    # A frame far past the limit is dropped by libzmq (MAXMSGSIZE) before Python sees it.
    huge = zctx.socket(zmq.DEALER)
    huge.connect(f"tcp://127.0.0.1:{small.request_port}")
    huge.send(os.urandom(LIMIT * 3))

    assert small.cli_json("run", "hv1", "test.ping") == {"hv1": True}
    assert small.master.alive()
    with MasterClient.from_config_dir(small.master_dir) as client:
        assert client.call("master.ping")["rejected_frames"] == counted_before + len(cases)
    assert len(rejections(small.master, REJECTED)) == before + len(cases)
    log = small.master.log()
    assert "Traceback" not in log and "failed inside the master" not in log


def _zmtp_greeting() -> bytes:
    """A ZMTP 3.0 greeting offering the NULL mechanism."""
    return b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + b"\0" * 31


def _zmtp_ready(socket_type: bytes) -> bytes:
    """The NULL mechanism's READY command naming ``socket_type``."""
    body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
    return b"\x04" + bytes([len(body)]) + body


def test_master_survives_raw_tcp_garbage_on_both_ports(small: Cluster) -> None:
    rng = random.Random(7)  # reproducible garbage
    log_before = len(small.master.log().splitlines())
    with MasterClient.from_config_dir(small.master_dir) as client:
        counted_before = client.call("master.ping")["rejected_frames"]
    ports = ((small.request_port, b"DEALER", b"PUB"), (small.publish_port, b"SUB", b"DEALER"))
    for port, socket_type, mismatched in ports:
        payloads = [
            rng.randbytes(4096),  # without ZMTP 3's signature, libzmq reads this as ZMTP 1.0 frames
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\0" * 100_000,
            _zmtp_greeting() + rng.randbytes(512),
            _zmtp_greeting()[:11],  # a greeting cut short, then silence
            # a valid handshake, then one frame declaring 2^62 bytes: MAXMSGSIZE refuses it unread
            _zmtp_greeting() + _zmtp_ready(socket_type) + b"\x02" + struct.pack(">Q", 1 << 62) + b"x" * 64,
            _zmtp_greeting() + _zmtp_ready(mismatched) + b"\x00\x03abc",  # a socket type it never pairs with
        ]
        conns = []
        for payload in payloads * 5:
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            try:
                conn.sendall(payload)
            except OSError:
                pass  # the master may already have hung up: that is the point
            conns.append(conn)
        for conn in conns:
            conn.close()
    assert small.cli_json("run", "hv1", "test.ping") == {"hv1": True}
    assert small.master.alive()
    # Whatever libzmq passed on as messages was refused with one line each, and nothing else went wrong.
    new = small.master.log().splitlines()[log_before:]
    refused = [line for line in new if REJECTED in line]
    with MasterClient.from_config_dir(small.master_dir) as client:
        assert client.call("master.ping")["rejected_frames"] - counted_before == len(refused)
    assert not [line for line in new if " ERROR " in line or "Traceback" in line or "failed inside" in line]
    assert not [line for line in new if " WARNING " in line and REJECTED not in line]


# ---- the agent ----------------------------------------------------------------------------


def test_agent_rejects_each_malformed_frame_on_both_channels_and_keeps_serving(
    tmp_path: Path, zctx: zmq.Context[Any], request: pytest.FixtureRequest,
) -> None:
    fake = FakeMaster(zctx)
    cluster = Cluster(tmp_path)  # used for the agent only; a fake master stands in for the real one
    try:
        agent = cluster.start_agent("hv1", publish_port=fake.publish_port, request_port=fake.request_port,
                                    max_frame_bytes=LIMIT, request_timeout_seconds=30.0)
        _, hello = fake.wait_hello()
        fake.wait_subscribed(b"*\x00", b"@hv1\x00")

        welcome = fake.reply_frame(Welcome(state="accepted", session_key=fake.session.key), hello.nonce)
        job_frame = fake.job_frame(ping_job("hv1"))
        rogue = Identity.generate()
        rogue_frame, _ = seal(rogue, "master", "ack", b"", present_key=True)

        def signed_reply(kind: str, plain: bytes, *, encrypt: bool = True) -> bytes:
            body = box(fake.identity, fake.agent_public).encrypt(plain) if encrypt else plain
            return seal(fake.identity, "master", kind, body, present_key=True)[0]

        def signed_job(plain: bytes, kind: str = Job.KIND) -> bytes:
            body = fake.session.cipher().encrypt(plain)
            return seal(fake.identity, "master", kind, body, key_id=fake.session.key_id)[0]

        envelope = r"envelope (is not valid msgpack|violates its schema)"
        # 1. the request channel, before the agent trusts any key
        request_cases: list[tuple[list[bytes], str]] = [
            ([os.urandom(300)], envelope),
            ([b""], r"envelope is not valid msgpack"),
            ([welcome[: len(welcome) // 2]], r"envelope is not valid msgpack"),
            ([os.urandom(LIMIT + 1)], rf"frame of {LIMIT + 1} bytes exceeds the {LIMIT}-byte limit"),
            ([welcome, b"extra"], r"2 frames in one message, expected 1"),
            ([encode({"state": "accepted"})], r"envelope violates its schema"),
            ([encode(["master", b"", b"x", b"\0" * 63, b""])], r"envelope violates its schema"),
            ([encode(["master", b"\1" * 5, b"x", b"\0" * 64, b""])], r"presented key is not an Ed25519 public key"),
            ([encode(["master", b"", b"x", b"\0" * 64, b""])], r"presented key is not an Ed25519 public key"),
            # signed by the fake master's key from here on (which the agent then trusts on first use)
            ([signed_reply("job", encode(Welcome(state="accepted")))], r"unknown reply kind 'job'"),
            ([signed_reply("welcome", encode(Welcome(state="accepted")), encrypt=False)],
             r"body does not decrypt with the expected key"),
            ([signed_reply("welcome", encode({"state": "bogus"}))], r"welcome body violates its schema"),
            ([signed_reply("ack", encode({"jids": ["1"] * 3}))], r"ack body violates its schema"),
            ([signed_reply("ack", b"\xc1")], r"ack body is not valid msgpack"),
            ([rogue_frame], r"master presented key \S+ but this agent trusts \S+: refusing it"),
        ]
        before = len(rejections(agent))
        for parts, _ in request_cases:
            fake.send_to_agent(*parts)
        expect_rejections(agent, before, [r"rejected frame from the master: " + r for _, r in request_cases])

        # 2. the publish channel
        topic = b"*\x00"
        publish_cases: list[tuple[list[bytes], str]] = [
            ([topic], r"1 frames in a published message, expected 2"),
            ([topic, os.urandom(300)], envelope),
            ([topic, b""], r"envelope is not valid msgpack"),
            ([topic, job_frame[: len(job_frame) // 2]], r"envelope is not valid msgpack"),
            ([topic, os.urandom(LIMIT + 1)], rf"frame of {LIMIT + 1} bytes exceeds the {LIMIT}-byte limit"),
            ([topic, job_frame, b"extra"], r"a 'job' frame in 3 parts on topic b'\*\\x00': a private job comes"),
            ([topic, job_frame, b"extra", b"more"], r"4 frames in a published message, expected 2 or 3"),
            ([topic, encode({"jid": "1"})], r"envelope violates its schema"),
            ([topic, encode(["master", b"", b"x", b"\0" * 64, b""])],
             r"signature of frame from 'master' does not verify"),
        ]
        before = len(rejections(agent))
        for parts, _ in publish_cases:
            fake.publish(*parts)
        expect_rejections(agent, before, [r"rejected published frame: " + r for _, r in publish_cases])

        # 3. accepted now: malformed jobs sealed with the session key the agent holds
        fake.send_to_agent(welcome)
        fake.serve_until(lambda h, m: isinstance(m, Heartbeat))
        deep = deep_value_msgpack(ping_job("hv1", "test.echo", [DEEP]), NESTING)
        job_cases: list[tuple[list[bytes], str]] = [
            ([topic, signed_job(encode(ping_job("hv1")), kind="shutdown")], r"unknown published kind 'shutdown'"),
            ([topic, signed_job(encode({"jid": "2" * 20, "fun": "test.ping"}))], r"job violates its schema"),
            ([topic, signed_job(b"\xc1")], r"job is not valid msgpack"),
            ([topic, signed_job(encode(msgspec.structs.replace(ping_job("hv1"), args=[0] * 257)))],
             r"job violates its schema"),
            ([topic, signed_job(deep)], r"job is nested too deeply"),
        ]
        before = len(rejections(agent))
        for parts, _ in job_cases:
            fake.publish(*parts)
        expect_rejections(agent, before, [r"rejected published frame: " + r for _, r in job_cases])

        # still serving: a real job runs and its return comes back
        job = ping_job("hv1")
        fake.publish(b"@hv1\x00", fake.job_frame(job))
        seen = fake.serve_until(returned(job.jid))
        ret = next(r for _, m in seen if isinstance(m, Returns) for r in m.returns if r.jid == job.jid)
        assert ret.success and ret.result is True
        assert agent.alive()
        total = len(request_cases) + len(publish_cases) + len(job_cases)
        assert len(rejections(agent)) == total
        assert "Traceback" not in agent.log()
        assert agent.stop() == 0, "the agent did not stop cleanly on SIGTERM"
    finally:
        cluster.stop()
        if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
            for daemon in cluster.agents.values():
                print(f"----- {daemon.name} log -----\n{daemon.log()[-8000:]}")
