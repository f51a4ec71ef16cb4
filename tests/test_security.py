"""docs/architecture.md "Message security", properties 1 to 6: each one attacked on the wire.

Real master and agent processes (tests/cluster.py), real ZeroMQ sockets that
the tests connect themselves, and real keys: frames are built with the
protocol's own seal/encode/PeerCipher exactly as a peer builds them, then one
thing is changed. Every attack is followed by a genuine frame over the same
socket, which the receiver handles after the attack (one socket, one loop, in
order): that frame's effect shows the set-up was sound, so the absence of the
attack's effect is the property and not a broken test. Property 7 (bounded
input) is in test_bounded_input.py.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from saltmarsh.pki.keys import Identity, encode_public_key
from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.crypto import SessionCipher
from saltmarsh.protocol.envelope import Outer, SignedHeader, parse_outer, seal, verify
from saltmarsh.protocol.errors import UndecryptableBody
from saltmarsh.protocol.jobseal import PRIVATE_JOB_KIND, job_cipher, unwrap_job_key
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.messages import Ack, Heartbeat, Hello, Job, Refused, Returns, Welcome

from .cluster import Cluster, wait_until
from .wire import (
    REJECTED,
    EventWatch,
    FakeMaster,
    RawAgent,
    RecordingRelay,
    agent_identity,
    box,
    count,
    events_message,
    flip_byte,
    handmade_frame,
    lines,
    master_identity,
    ping_job,
    register_raw_agent,
    request_frame,
    returned,
    returns_message,
    session_key_bytes,
    silent_job,
    wait_count,
)


@pytest.fixture
def zctx() -> Iterator[zmq.Context[Any]]:
    """A ZeroMQ context for the test's own sockets, destroyed with LINGER 0 afterwards."""
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def wait_lines(daemon: Any, pattern: str, n: int, timeout: float = 10.0) -> list[str]:
    """Wait until ``n`` log lines match ``pattern``; fail if more do."""
    wait_until(lambda: len(lines(daemon, pattern)) >= n, timeout=timeout,
               what=f"{n} lines matching {pattern!r} in the {daemon.name} log")
    found = lines(daemon, pattern)
    assert len(found) == n, f"{len(found)} lines match {pattern!r}, expected {n}: {found}"
    return found


def returns_of(cluster: Cluster, jid: str) -> dict[str, Any]:
    """The returns the job cache holds for ``jid``, by agent."""
    return dict(cluster.cli_json("job", "show", jid)["returns"])


# ---- 1. authenticity ------------------------------------------------------------------------


def test_forged_signature_is_rejected_logged_and_has_no_effect(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    victim = register_raw_agent(cluster, zctx, "victim")
    jid = silent_job(cluster, "victim")
    watch = EventWatch(cluster)
    try:
        watch.sync(victim)
        pub = victim.master_public
        attacker = Identity.generate()
        forged = returns_message(jid, "forged")
        # Signed by another key; even the Box is the victim's, so only the signature is wrong.
        by_attacker, _ = request_frame(attacker, "victim", forged, pub, cipher_identity=victim.identity)
        # The victim's own well-formed frame with one flipped byte: in the signed body, in the signature.
        valid, _ = request_frame(victim.identity, "victim", forged, pub)
        outer = decode(valid, Outer)
        body_flipped = flip_byte(valid, valid.index(outer.signed) + len(outer.signed) - 3)
        signature_flipped = flip_byte(valid, valid.rindex(outer.signature) + 7)
        events_by_attacker, _ = request_frame(attacker, "victim", events_message("forged/event"), pub,
                                              cipher_identity=victim.identity)
        rejected_before = count(cluster.master, REJECTED)
        for frame in (by_attacker, body_flipped, signature_flipped, events_by_attacker):
            victim.send_frame(frame)

        reason = r"rejected frame from \S+: signature of frame from 'victim' does not verify$"
        wait_lines(cluster.master, reason, 4)
        # The genuine frame is handled after the forged ones; its reply is the first and only one.
        ack = victim.reply_to(victim.send(returns_message(jid, "genuine")))
        assert isinstance(ack, Ack) and ack.jids == [jid]
        watch.wait_tag(f"saltmarsh/job/{jid}/ret/victim")
        assert count(cluster.master, REJECTED) == rejected_before + 4
        assert {a: r["result"] for a, r in returns_of(cluster, jid).items()} == {"victim": "genuine"}
        rets = [e for e in watch.events if e["tag"].startswith(f"saltmarsh/job/{jid}/ret/")]
        assert [e["data"]["result"] for e in rets] == ["genuine"]
        assert "forged/event" not in watch.tags()
    finally:
        watch.close()


# ---- 2. confidentiality ---------------------------------------------------------------------


def test_publish_channel_hides_job_arguments(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    cluster.start_agents("hv1")
    sub = zctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{cluster.publish_port}")

    def subscribed() -> bool:  # a SUB socket only hears what is sent after its subscription arrives
        cluster.cli("run", "hv1", "test.ping")
        return bool(sub.poll(500))
    wait_until(subscribed, timeout=20, interval=0, what="the raw SUB socket to receive a job")
    while sub.poll(300):
        sub.recv_multipart()

    secret = f"top-secret-{uuid.uuid4().hex}"
    assert cluster.cli_json("run", "hv1", "test.echo", secret) == {"hv1": secret}
    captured = []
    while sub.poll(1000):
        captured.append(sub.recv_multipart())
    assert len(captured) == 1, captured
    [[topic, frame, wrapped]] = captured
    assert topic == b"@hv1\x00"
    assert secret.encode() not in topic + frame + wrapped
    assert b"test.echo" not in frame, "the function name travels in the clear"

    # The captured frame is that job: it verifies with the master's key and, with the job key
    # unwrapped by hv1's own Box, holds the secret; the session key every agent holds opens nothing.
    master_public = master_identity(cluster.master_dir).public_key
    header = verify(parse_outer(frame, Limits()), master_public)
    job_key = unwrap_job_key(box(agent_identity(cluster.agents["hv1"]), master_public), wrapped, header.nonce)
    job = decode(job_cipher(job_key).decrypt(header.body), Job)
    assert header.kind == PRIVATE_JOB_KIND and job.fun == "test.echo" and job.args == [secret]
    with pytest.raises(UndecryptableBody):
        SessionCipher(session_key_bytes(cluster.master_dir)).decrypt(header.body)


def test_request_channel_hides_bodies_and_the_session_key(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    # A real agent whose request channel runs through a relay that records every byte.
    relay = RecordingRelay(cluster.request_port)
    try:
        cluster.start_agent("hv1", request_port=relay.port)
        cluster.accept("hv1")
        secret = f"top-secret-{uuid.uuid4().hex}"
        assert cluster.cli_json("run", "hv1", "test.echo", secret) == {"hv1": secret}
        jid = cluster.cli_json("job", "list")[0]["jid"]
        wire = relay.recorded
        assert len(wire) > 1000  # hellos, welcomes, heartbeats, the return and its ack went this way
        assert secret.encode() not in wire, "a job return crossed the request channel in the clear"
        assert jid.encode() not in wire
        assert session_key_bytes(cluster.master_dir) not in wire, "the session key crossed in the clear"
    finally:
        relay.close()

    # A Returns frame built as agent/channel.py builds it carries its plaintext only encrypted,
    # and the master reads it: the secret is in the job cache afterwards.
    victim = register_raw_agent(cluster, zctx, "victim")
    jid = silent_job(cluster, "victim")
    secret = f"top-secret-{uuid.uuid4().hex}"
    frame, nonce = request_frame(victim.identity, "victim", returns_message(jid, secret), victim.master_public)
    assert secret.encode() not in frame and jid.encode() not in frame
    victim.send_frame(frame)
    assert isinstance(victim.reply_to(nonce), Ack)
    assert returns_of(cluster, jid)["victim"]["result"] == secret


# ---- 3. freshness ---------------------------------------------------------------------------


def test_replayed_and_stale_frames_are_refused(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    victim = register_raw_agent(cluster, zctx, "victim")
    jid = silent_job(cluster, "victim")
    watch = EventWatch(cluster)
    try:
        watch.sync(victim)
        pub = victim.master_public
        tag = f"replay/{uuid.uuid4().hex}"
        frame, nonce = request_frame(victim.identity, "victim", events_message(tag), pub)
        victim.send_frame(frame)
        assert isinstance(victim.reply_to(nonce), Ack)
        victim.send_frame(frame)  # the very same bytes again
        wait_lines(cluster.master, rf"rejected frame from \S+: nonce {nonce.hex()} from victim was already seen", 1)

        def sealed_at(ts: float, result: str) -> bytes:
            body = box(victim.identity, pub).encrypt(encode(returns_message(jid, result)))
            return handmade_frame(victim.identity, "victim", Returns.KIND, body, ts=ts)[0]

        now = time.time()
        for ts, result in ((now - 1000, "too old"), (now + 1000, "from the future"), (float("nan"), "no time"),
                           (float("inf"), "forever")):
            victim.send_frame(sealed_at(ts, result))
        wait_lines(cluster.master, r"rejected frame from \S+: timestamp", 4)

        # The same hand-made frame with the current time is accepted: only the time was wrong.
        fresh = sealed_at(time.time(), "fresh")
        victim.send_frame(fresh)
        fresh_nonce = decode(decode(fresh, Outer).signed, SignedHeader).nonce
        ack = victim.reply_to(fresh_nonce)  # no reply to the replay or the stale frames came first
        assert isinstance(ack, Ack) and ack.jids == [jid]
        assert {a: r["result"] for a, r in returns_of(cluster, jid).items()} == {"victim": "fresh"}

        victim.send_frame(fresh)  # an accepted Returns replayed: refused, never acknowledged twice
        wait_lines(cluster.master, r"rejected frame from \S+: nonce \S+ from victim was already seen", 2)
        assert isinstance(victim.reply_to(victim.send(Heartbeat())), Ack)

        watch.wait_tag(f"saltmarsh/job/{jid}/ret/victim")
        assert watch.tags().count(tag) == 1, "a replayed events batch was relayed twice"
    finally:
        watch.close()


def test_agent_refuses_forged_replayed_and_stale_frames_from_its_master(tmp_path: Path, zctx: zmq.Context[Any]) -> None:
    # The agent's end of properties 1 and 3: a master made of raw sockets, trusted on first use.
    fake = FakeMaster(zctx)
    cluster = Cluster(tmp_path)  # used for the agent only; its master is never started
    try:
        agent = cluster.start_agent("hv1", publish_port=fake.publish_port, request_port=fake.request_port,
                                    request_timeout_seconds=30.0)
        _, hello = fake.wait_hello()
        fake.wait_subscribed(b"*\x00", b"@hv1\x00")
        fake.welcome(hello)
        fake.serve_until(lambda h, m: isinstance(m, Heartbeat))  # the agent says it is up

        first = ping_job("hv1")
        first_frame = fake.job_frame(first)
        fake.publish(b"@hv1\x00", first_frame)
        fake.serve_until(returned(first.jid))
        forged = [ping_job("hv1") for _ in range(5)]
        fake.publish(b"@hv1\x00", first_frame)  # replayed
        fake.publish(b"@hv1\x00", fake.job_frame(forged[0], signer=Identity.generate()))
        flipped = fake.job_frame(forged[1])
        fake.publish(b"@hv1\x00", flip_byte(flipped, flipped.rindex(decode(flipped, Outer).signature) + 3))
        fake.publish(b"@hv1\x00", fake.job_frame(forged[2], ts=time.time() - 1000))
        fake.publish(b"@hv1\x00", fake.job_frame(forged[3], ts=time.time() + 1000))
        fake.publish(b"@hv1\x00", fake.job_frame(forged[4], ts=float("nan")))
        # request channel: a reply presenting the trusted key but signed by another one,
        # and a genuine push sent twice
        body = box(fake.identity, fake.agent_public).encrypt(encode(Ack()))
        outer = decode(seal(Identity.generate(), "master", Ack.KIND, body, present_key=True)[0], Outer)
        fake.send_to_agent(encode(Outer(outer.sender, fake.identity.public_key, outer.signed, outer.signature,
                                        outer.body)))
        push = fake.reply_frame(Welcome(state="accepted", session_key=fake.session.key, heartbeat_seconds=30.0))
        fake.send_to_agent(push)
        fake.send_to_agent(push)

        last = ping_job("hv1")
        fake.publish(b"@hv1\x00", fake.job_frame(last))
        fake.serve_until(returned(last.jid))
        log = agent.log()
        assert f"job {first.jid}" in log and f"job {last.jid}" in log
        for job in forged:
            assert f"job {job.jid}" not in log
        assert log.count(f"job {first.jid}:") == 1
        wait_lines(agent, r"rejected published frame: nonce \S+ from master was already seen", 1)
        wait_lines(agent, r"rejected published frame: signature of frame from 'master' does not verify", 2)
        wait_lines(agent, r"rejected published frame: timestamp", 3)
        wait_lines(agent, r"rejected frame from the master: signature of frame from 'master' does not verify", 1)
        wait_lines(agent, r"rejected frame from the master: nonce \S+ from master was already seen", 1)
        assert agent.alive()
        assert agent.stop() == 0, "the agent did not stop cleanly on SIGTERM"
    finally:
        cluster.stop()


# ---- 4. identity ----------------------------------------------------------------------------


def test_an_agent_cannot_speak_as_another(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    cluster.start_agents("hv1")
    victim = register_raw_agent(cluster, zctx, "victim")
    jid = silent_job(cluster, "victim")
    watch = EventWatch(cluster)
    try:
        watch.sync(victim)
        pub = victim.master_public
        hv1 = agent_identity(cluster.agents["hv1"])  # a real, accepted agent's own key
        impostor = RawAgent(zctx, cluster.request_port, hv1, "victim", pub)
        forged = returns_message(jid, "forged by hv1")

        # Signed with hv1's key, claiming to be victim: the victim's key does not verify it.
        impostor.send_frame(request_frame(hv1, "victim", forged, pub)[0])
        wait_lines(cluster.master, r"rejected frame from \S+: signature of frame from 'victim' does not verify", 1)
        # The same, presenting hv1's key: a presented key is only good for submitting itself.
        nonce = impostor.send(forged, present_key=True)
        refused = impostor.reply_to(nonce)
        assert isinstance(refused, Refused)
        wait_lines(cluster.master, r"rejected frame from \S+: 'victim' sent 'returns' but its key is not accepted: "
                                   r"an unaccepted key may only submit itself", 1)
        # Submitting hv1's key as victim's: refused, victim's key unchanged.
        conflict = impostor.reply_to(impostor.send(Hello()))
        assert isinstance(conflict, Welcome) and conflict.state == "conflict" and not conflict.session_key
        assert cluster.cli_json("key", "finger", "victim") == {"victim": victim.identity.fingerprint}
        # Verified with hv1's own key but the signed header names victim as sender.
        inner = decode(request_frame(hv1, "victim", forged, pub)[0], Outer)
        as_hv1 = encode(Outer("hv1", b"", inner.signed, hv1.sign(inner.signed), inner.body))
        impostor.send_frame(as_hv1)
        wait_lines(cluster.master, r"rejected frame from \S+: signed sender 'victim' differs from 'hv1'", 1)
        # As itself, hv1 may not fire events under victim's tags or the master's.
        own = RawAgent(zctx, cluster.request_port, hv1, "hv1", pub)
        assert isinstance(own.reply_to(own.send(events_message("saltmarsh/agent/victim/up"))), Ack)
        assert isinstance(own.reply_to(own.send(events_message(f"saltmarsh/job/{jid}/ret/victim",
                                                               {"result": "forged"}))), Ack)
        wait_lines(cluster.master, r"refused event from hv1: tag 'saltmarsh/(agent/victim/up|job/\S+/ret/victim)'", 2)

        ack = victim.reply_to(victim.send(returns_message(jid, "genuine")))
        assert isinstance(ack, Ack)
        watch.wait_tag(f"saltmarsh/job/{jid}/ret/victim")
        assert {a: r["result"] for a, r in returns_of(cluster, jid).items()} == {"victim": "genuine"}
        rets = [e for e in watch.events if e["tag"].startswith(f"saltmarsh/job/{jid}/ret/")]
        assert [e["data"]["result"] for e in rets] == ["genuine"]
        assert "saltmarsh/agent/victim/up" not in watch.tags()
        assert cluster.cli_json("key", "list")["accepted"] == ["hv1", "victim"]
    finally:
        watch.close()


def _state_files(master_dir: Path) -> dict[str, bytes]:
    """Every regular file the master keeps, by path, except the job cache database."""
    root = master_dir / "state"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith("jobs.sqlite")}


def test_an_unaccepted_key_may_only_submit_itself(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    victim = register_raw_agent(cluster, zctx, "victim")
    jid = silent_job(cluster, "victim")
    watch = EventWatch(cluster)
    try:
        watch.sync(victim)
        newbie = register_raw_agent(cluster, zctx, "newbie", accept=False)  # its key is pending
        welcome = newbie.reply_to(newbie.send(Hello()))
        assert isinstance(welcome, Welcome) and welcome.state == "pending" and welcome.session_key == b""
        stranger = RawAgent(zctx, cluster.request_port, Identity.generate(), "stranger", victim.master_public)
        files_before = _state_files(cluster.master_dir)
        assert "pki/agents/pending/newbie" in files_before
        rejected_before = count(cluster.master, REJECTED)

        for peer in (newbie, stranger):
            for message in (returns_message(jid, f"from {peer.agent_id}"),
                            events_message(f"unaccepted/{peer.agent_id}"), Heartbeat()):
                refused = peer.reply_to(peer.send(message, present_key=True))
                assert isinstance(refused, Refused) and refused.reason == "key not accepted"
            # without presenting a key there is nothing to verify with
            peer.send(returns_message(jid, f"bare {peer.agent_id}"))
        for name in ("newbie", "stranger"):
            wait_lines(cluster.master, rf"rejected frame from \S+: '{name}' sent '(returns|events|heartbeat)' but its "
                                       r"key is not accepted: an unaccepted key may only submit itself", 3)
            wait_lines(cluster.master, rf"rejected frame from \S+: no accepted key for '{name}' and none presented", 1)
        assert count(cluster.master, REJECTED) == rejected_before + 8

        assert isinstance(victim.reply_to(victim.send(returns_message(jid, "genuine"))), Ack)
        watch.wait_tag(f"saltmarsh/job/{jid}/ret/victim")
        assert list(returns_of(cluster, jid)) == ["victim"]
        # the only trace of either is newbie's own submission, which happened before the snapshot
        assert [t for t in watch.tags() if "newbie" in t or "stranger" in t or t.startswith("unaccepted/")] \
            == ["saltmarsh/key/newbie/pending"]
        assert _state_files(cluster.master_dir) == files_before, "a refused frame changed the master's files"
        keys = cluster.cli_json("key", "list")
        assert keys["pending"] == ["newbie"] and keys["accepted"] == ["victim"] and keys["rejected"] == []
    finally:
        watch.close()


# ---- 5. revocation --------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["delete", "reject"])
def test_revoked_agent_gets_no_further_job(cluster: Cluster, zctx: zmq.Context[Any], action: str) -> None:
    cluster.start_agents("keep", "gone")
    keep, gone = cluster.agents["keep"], cluster.agents["gone"]
    old_key = session_key_bytes(cluster.master_dir)
    sub = zctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"*\x00")
    sub.connect(f"tcp://127.0.0.1:{cluster.publish_port}")
    wait_until(lambda: cluster.cli("run", "*", "test.ping") and sub.poll(500), timeout=20, interval=0,
               what="the raw SUB socket to receive a broadcast job")
    while sub.poll(300):
        sub.recv_multipart()
    rotations = count(cluster.master, "session key rotated")

    cluster.cli("key", action, "gone")
    wait_count(cluster.master, "session key rotated", rotations + 1)
    new_key_id = re.findall(r"session key rotated \(new key id ([0-9a-f]+)\)", cluster.master.log())[-1]

    # The next job, to every agent: the broadcast topic, which gone's socket still receives.
    marker = f"after-{action}-{uuid.uuid4().hex}"
    assert cluster.cli_json("run", "*", "test.echo", marker) == {"keep": marker}
    jid = cluster.cli_json("job", "list")[0]["jid"]
    assert list(returns_of(cluster, jid)) == ["keep"]
    assert f"job {jid}: test.echo" in keep.log()
    # gone received that very frame, could not open it, asked again and was not given the key
    wait_until(lambda: f"published with session key {new_key_id} which this agent lacks" in gone.log(),
               timeout=10, what="gone to receive the job sealed with the new key")
    wait_until(lambda: "pending on the master" in gone.log() or "master answered rejected" in gone.log(),
               timeout=10, what="gone to learn that its key is no longer accepted")
    assert f"job {jid}" not in gone.log()
    assert gone.alive() and keep.alive()
    assert action == "delete" or cluster.cli_json("key", "list")["rejected"] == ["gone"]

    # The frame on the wire: the old session key (all gone ever held) cannot open it.
    [topic, frame] = sub.recv_multipart()
    assert topic == b"*\x00"
    header = verify(parse_outer(frame, Limits()), master_identity(cluster.master_dir).public_key)
    assert header.key_id.hex() == new_key_id
    with pytest.raises(UndecryptableBody):
        SessionCipher(old_key).decrypt(header.body)
    job = decode(SessionCipher(session_key_bytes(cluster.master_dir)).decrypt(header.body), Job)
    assert job.jid == jid


# ---- 6. master pinning ----------------------------------------------------------------------


def test_pinned_agent_refuses_a_rogue_master(cluster: Cluster, tmp_path: Path) -> None:
    real = master_identity(cluster.master_dir)
    rogue = Cluster(tmp_path / "rogue", auto_accept=True)
    try:
        rogue.start_master()
        assert master_identity(rogue.master_dir).fingerprint != real.fingerprint
        # An agent pinned to the real master but pointed at the rogue one.
        agent = rogue.start_agent("hv1", master_fingerprint=real.fingerprint)
        wait_until(lambda: "refusing it" in agent.log(), timeout=10, what="the agent to refuse the rogue master")
        assert re.search(r"master presented key \S+ but master_fingerprint pins \S+: refusing it", agent.log())
        # The rogue auto-accepts the key, publishes a job, and gets nothing back.
        wait_until(lambda: "hv1" in rogue.cli_json("key", "list")["accepted"], what="the rogue to accept hv1")
        result = rogue.cli("run", "hv1", "test.ping", "--json", "--timeout", "2", check=False)
        assert result.returncode == 1 and "did not answer job" in result.stderr
        jid = rogue.cli_json("job", "list")[0]["jid"]
        assert "accepted by the master" not in agent.log()
        assert f"job {jid}" not in agent.log()
        assert not (agent.config_dir / "state" / "pki" / "master.pub").exists()
        # The same pin pointed at the real master: accepted and answering, so the pin itself is right.
        cluster.start_agents("hv2", master_fingerprint=real.fingerprint)
        assert "matches the pinned fingerprint" in cluster.agents["hv2"].log()
    finally:
        rogue.stop()


def test_agent_refuses_a_different_master_after_first_use(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agents("hv1")  # no fingerprint configured: trust on first use
    agent = cluster.agents["hv1"]
    stored = agent.config_dir / "state" / "pki" / "master.pub"
    first = master_identity(cluster.master_dir).public_key
    assert stored.read_text().strip() == encode_public_key(first)
    cluster.master.stop()
    rogue = Cluster(tmp_path / "rogue", auto_accept=True,
                    publish_port=cluster.publish_port, request_port=cluster.request_port)
    try:
        rogue.start_master()
        wait_until(lambda: "refusing it (delete" in agent.log(), timeout=15, what="the agent to refuse the new master")
        wait_until(lambda: "hv1" in rogue.cli_json("key", "list")["accepted"], what="the rogue to accept hv1")
        result = rogue.cli("run", "hv1", "test.ping", "--json", "--timeout", "2", check=False)
        assert result.returncode == 1 and "did not answer job" in result.stderr
        jid = rogue.cli_json("job", "list")[0]["jid"]
        assert f"job {jid}" not in agent.log()
        assert stored.read_text().strip() == encode_public_key(first)
        assert agent.alive()
    finally:
        rogue.stop()
