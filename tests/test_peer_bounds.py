"""Bounds on what peers that are not accepted can cost the master (issue 6, "nobody let in").

The pending keys a flood of fresh ids may create (max_pending_keys), the replay
caches (max_replay_nonces; key submissions have a cache of their own), the log
lines garbage may write (protocol/ratelimit.py), and the X25519 Boxes kept for
keys seen once. The CVE regression tests proper are in test_cve_regressions.py.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from saltmarsh.master.wire.request_channel import MAX_CIPHERS, RequestChannel
from saltmarsh.pki.keys import Identity
from saltmarsh.protocol.codec import decode
from saltmarsh.protocol.envelope import parse_outer, verify
from saltmarsh.protocol.errors import ReplayedFrame
from saltmarsh.protocol.freshness import ReplayGuard
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.messages import REPLY_KINDS, Ack, Heartbeat, Hello, Message, Refused, Welcome
from saltmarsh.protocol.ratelimit import DEFAULT_BURST, LogRateLimit

from .cluster import Cluster, wait_until
from .master_state import key_files, rejected_frames, show_logs_on_failure, wait_lines
from .wire import REJECTED, EventWatch, RawAgent, box, count, lines, master_identity, register_raw_agent, request_frame


def _drain(socket: zmq.Socket[Any], identities: dict[bytes, Identity], pub: bytes,
           n: int, timeout: float = 30.0) -> dict[bytes, Message]:
    """Read ``n`` replies on a DEALER shared by many keys: {request nonce: reply}."""
    got: dict[bytes, Message] = {}
    deadline = time.monotonic() + timeout
    while len(got) < n:
        remaining = deadline - time.monotonic()
        assert remaining > 0 and socket.poll(int(remaining * 1000)), f"{len(got)} of {n} replies"
        header = verify(parse_outer(socket.recv(), Limits()), pub)
        plain = box(identities[header.reply_to], pub).decrypt(header.body)
        got[header.reply_to] = decode(plain, REPLY_KINDS[header.kind], header.kind)
    return got


@pytest.mark.timeout(180)
def test_a_flood_of_fresh_ids_stops_at_max_pending_keys(tmp_path: Path, zctx: zmq.Context[Any],
                                                        request: pytest.FixtureRequest) -> None:
    cap, flood = 5, DEFAULT_BURST + 100
    cluster = Cluster(tmp_path, max_pending_keys=cap)
    try:
        cluster.start_master()
        pub = master_identity(cluster.master_dir).public_key
        victim = register_raw_agent(cluster, zctx, "victim")  # pending, then accepted: room for 5 more
        watch = EventWatch(cluster)
        watch.sync(victim)
        dealer = zctx.socket(zmq.DEALER)
        dealer.connect(f"tcp://127.0.0.1:{cluster.request_port}")
        identities: dict[bytes, Identity] = {}
        order = []
        started = time.monotonic()
        for i in range(flood):
            identity = Identity.generate()
            frame, nonce = request_frame(identity, f"flood{i:04d}", Hello(), pub)
            identities[nonce] = identity
            order.append(nonce)
            dealer.send(frame)
        replies = _drain(dealer, identities, pub, flood)
        elapsed = time.monotonic() - started
        kinds = [type(replies[n]).__name__ for n in order]
        assert kinds == ["Welcome"] * cap + ["Refused"] * (flood - cap), kinds
        welcomed = [replies[n] for n in order[:cap]]
        refused = [replies[n] for n in order[cap:]]
        assert all(isinstance(w, Welcome) and w.state == "pending" for w in welcomed)
        assert {r.reason for r in refused if isinstance(r, Refused)} == {
            "too many keys are pending on the master; try again later"}
        assert cluster.pending() == [f"flood{i:04d}" for i in range(cap)]
        assert sorted(key_files(cluster)) == sorted(["accepted/victim"] + [f"pending/flood{i:04d}" for i in range(cap)])

        # Every refusal has its reason up to the burst; past it, about a line a second.
        refusal = r"refused key submission from \S+: 5 keys are already pending \(max_pending_keys\)"
        logged = len(lines(cluster.master, refusal))
        assert DEFAULT_BURST <= logged <= DEFAULT_BURST + elapsed + 2, (logged, elapsed)
        assert logged < flood - cap
        # Late submissions, one at a time, until the limiter's bucket refills: the first one then
        # logged says how many were not (each is refused all the same).
        summary = r"\d+ more lines like the next \(pending-cap\) were not logged"

        def late_refused_and_logged() -> bool:
            late = Identity.generate()
            frame, nonce = request_frame(late, f"late{len(identities)}", Hello(), pub)
            identities[nonce] = late
            dealer.send(frame)
            assert isinstance(_drain(dealer, identities, pub, 1)[nonce], Refused)
            return bool(lines(cluster.master, summary))

        wait_until(late_refused_and_logged, timeout=10, interval=0.1, what="a refusal logged once the bucket refills")
        wait_lines(cluster, summary, 1)
        assert len(lines(cluster.master, refusal)) == logged + 1

        # An id already pending is still answered as pending; deleting one makes room for one more.
        first = identities[order[0]]
        frame, nonce = request_frame(first, "flood0000", Hello(), pub)
        identities[nonce] = first
        dealer.send(frame)
        again = _drain(dealer, identities, pub, 1)[nonce]
        assert isinstance(again, Welcome) and again.state == "pending"
        cluster.cli("key", "delete", "flood0001")
        newcomer = register_raw_agent(cluster, zctx, "newcomer", accept=False)
        assert cluster.pending() == ["flood0000", "flood0002", "flood0003", "flood0004", "newcomer"]
        pending_events = [t for t in watch.tags() if t.endswith("/pending")]
        assert len(pending_events) == cap + 1, pending_events  # five from the flood, newcomer's
        assert isinstance(victim.reply_to(victim.send(Heartbeat())), Ack)
        newcomer.close()
        watch.close()
        dealer.close(linger=0)
    finally:
        cluster.stop()
        show_logs_on_failure(cluster, request)


def test_replay_caches_are_bounded_and_key_submissions_have_their_own(
    tmp_path: Path, zctx: zmq.Context[Any], request: pytest.FixtureRequest,
) -> None:
    size = 16
    cluster = Cluster(tmp_path, max_replay_nonces=size)
    try:
        cluster.start_master()
        pub = master_identity(cluster.master_dir).public_key
        victim = register_raw_agent(cluster, zctx, "victim")  # one hello in each cache
        full = r"replay cache is full \(16 nonces inside the window\)"
        # 15 more key submissions fill the submissions' cache; the 16th fresh one is refused unrecorded.
        for i in range(size - 1):
            assert isinstance(register_raw_agent(cluster, zctx, f"new{i}", accept=False), RawAgent)
        extra = RawAgent(zctx, cluster.request_port, Identity.generate(), "one-too-many", pub)
        extra.send(Hello())
        wait_lines(cluster, rf"{REJECTED} \S+: {full}: cannot record the nonce from one-too-many", 1)
        assert extra.recv(timeout=0.5) is None
        assert "one-too-many" not in cluster.pending()
        # The accepted agent's frames go to the other cache: served until that one is full too.
        for _ in range(size - 1):
            assert isinstance(victim.reply_to(victim.send(Heartbeat())), Ack)
        victim.send(Heartbeat())
        wait_lines(cluster, rf"{REJECTED} \S+: {full}: cannot record the nonce from victim", 1)
        assert victim.recv(timeout=0.5) is None
        assert cluster.master.alive()
    finally:
        cluster.stop()
        show_logs_on_failure(cluster, request)


def test_replay_guard_refuses_what_it_cannot_record_and_recovers_as_nonces_expire() -> None:
    now = [1000.0]
    guard = ReplayGuard(60, clock=lambda: now[0], max_entries=3)
    for n in (b"a", b"b", b"c"):
        guard.check("hv1", now[0], n * 16)
    with pytest.raises(ReplayedFrame, match="replay cache is full"):
        guard.check("hv1", now[0], b"d" * 16)
    with pytest.raises(ReplayedFrame, match="was already seen"):
        guard.check("hv1", now[0], b"a" * 16)  # a real replay is still named as one
    assert len(guard) == 3
    now[0] += 121  # twice the window: the first three expire, room again
    guard.check("hv1", now[0], b"d" * 16)
    assert len(guard) == 1
    # Entries cost the same whatever the sender's name: a digest of (sender, nonce).
    guard.check("h" * 128, now[0], b"e" * 16)
    guard.check("h" * 127, now[0], b"h" + b"e" * 15)  # same bytes once joined: still two entries
    assert len(guard) == 3


@pytest.mark.timeout(180)
def test_garbage_costs_a_bounded_number_of_log_lines(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    victim = register_raw_agent(cluster, zctx, "victim")
    before_lines = count(cluster.master, REJECTED)
    before = rejected_frames(cluster)
    size_before = cluster.master.log_path.stat().st_size
    flood = DEFAULT_BURST * 3
    garbage = zctx.socket(zmq.DEALER)
    garbage.connect(f"tcp://127.0.0.1:{cluster.request_port}")
    started = time.monotonic()
    for i in range(flood):
        garbage.send(b"\xc1" + hashlib.sha256(str(i).encode()).digest() * 30)
    wait_until(lambda: rejected_frames(cluster) >= before + flood, timeout=30, what="every frame to be counted")
    elapsed = time.monotonic() - started
    assert rejected_frames(cluster) == before + flood, "a frame was not counted"
    logged = count(cluster.master, REJECTED) - before_lines
    assert DEFAULT_BURST <= logged <= DEFAULT_BURST + elapsed + 2, (logged, elapsed)
    # each line is short: the log grew by far less than the garbage sent
    assert cluster.master.log_path.stat().st_size - size_before < (DEFAULT_BURST + elapsed + 2) * 300
    # More garbage until the limiter's bucket refills: the first line then logged says how many were not.
    summary = r"\d+ more lines like the next \(MalformedFrame\) were not logged in the last \d+ s"
    wait_until(lambda: garbage.send(b"\xc1") or lines(cluster.master, summary), timeout=10, interval=0.1,
               what="a rejection logged once the bucket refills")
    wait_lines(cluster, summary, 1)
    # other reasons have buckets of their own, and real work goes on
    assert isinstance(victim.reply_to(victim.send(Heartbeat())), Ack)
    stranger = RawAgent(zctx, cluster.request_port, Identity.generate(), "stranger", victim.master_public)
    stranger.send(Heartbeat())
    wait_lines(cluster, rf"{REJECTED} \S+: no accepted key for 'stranger' and none presented", 1)
    garbage.close(linger=0)


def test_log_rate_limit_per_reason() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("test_log_rate_limit_per_reason")
    logger.propagate = False
    logger.addHandler(Keep())
    now = [0.0]
    limit = LogRateLimit(logger, burst=3, per_second=0.5, clock=lambda: now[0])
    assert [limit.warning("a", "a %d", i) for i in range(5)] == [True, True, True, False, False]
    assert limit.warning("b", "b") is True  # another reason, another bucket
    now[0] += 2.0  # one token back
    assert limit.warning("a", "a late") is True
    assert records == ["a 0", "a 1", "a 2", "b", "2 more lines like the next (a) were not logged in the last 2 s",
                       "a late"]
    assert limit.suppressed == 2


def test_boxes_kept_for_keys_are_bounded() -> None:
    ctx = zmq.asyncio.Context()
    try:
        channel = RequestChannel(ctx, Identity.generate(), lambda agent_id: None, Limits())
        keep = Identity.generate().public_key
        channel.peer_cipher(keep)
        for _ in range(MAX_CIPHERS + 50):
            channel.peer_cipher(Identity.generate().public_key)
            channel.peer_cipher(keep)  # in use: never the one evicted
        assert len(channel._ciphers) == MAX_CIPHERS
        assert keep in channel._ciphers
        channel.close()
    finally:
        ctx.term()
