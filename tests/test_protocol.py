"""Protocol building blocks on their own: envelope, freshness, targets, tags, jids."""

from __future__ import annotations

import pytest

from saltmarsh.pki.keys import Identity
from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.envelope import parse_outer, seal, verify
from saltmarsh.protocol.errors import BadSignature, MalformedFrame, OversizedFrame, ReplayedFrame, StaleFrame
from saltmarsh.protocol.freshness import ReplayGuard
from saltmarsh.protocol.jids import jid_time, new_jid
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.messages import AgentEvent, Events, Job, JobReturn, Returns, Target
from saltmarsh.protocol.tags import agent_may_fire, tag_matches
from saltmarsh.protocol.targeting import make_target, matches

LIMITS = Limits(max_frame=4096)


def test_envelope_round_trip_and_tamper() -> None:
    alice, mallory = Identity.generate(), Identity.generate()
    frame, nonce = seal(alice, "hv1", "heartbeat", b"body")
    header = verify(parse_outer(frame, LIMITS), alice.public_key)
    assert (header.sender, header.kind, header.body, header.nonce) == ("hv1", "heartbeat", b"body", nonce)
    with pytest.raises(BadSignature):
        verify(parse_outer(frame, LIMITS), mallory.public_key)
    tampered = bytearray(frame)
    tampered[frame.index(b"body")] ^= 1  # the body travels beside the signed header, committed by its digest
    with pytest.raises(BadSignature, match="does not match its signed digest"):
        verify(parse_outer(bytes(tampered), LIMITS), alice.public_key)
    header_flip = bytearray(frame)
    header_flip[frame.index(b"heartbeat")] ^= 1
    with pytest.raises(BadSignature, match="signature of frame"):
        verify(parse_outer(bytes(header_flip), LIMITS), alice.public_key)


def test_envelope_size_and_shape() -> None:
    alice = Identity.generate()
    big, _ = seal(alice, "hv1", "events", b"x" * 5000)
    with pytest.raises(OversizedFrame, match="exceeds the 4096-byte limit"):
        parse_outer(big, LIMITS)
    for garbage in (b"", b"\x93\x01\x02\x03", encode({"a": 1}), encode(["hv1", b"", b"s", b"short-sig"])):
        with pytest.raises(MalformedFrame):
            parse_outer(garbage, LIMITS)


def test_replay_guard_window_and_nonces() -> None:
    now = [1000.0]
    guard = ReplayGuard(60, clock=lambda: now[0])
    guard.check("hv1", 1000.0, b"n" * 16)
    with pytest.raises(ReplayedFrame):
        guard.check("hv1", 1000.0, b"n" * 16)
    guard.check("hv2", 1000.0, b"n" * 16)  # nonces are per sender
    with pytest.raises(StaleFrame, match=r"-61\.0 s"):
        guard.check("hv1", 939.0, b"m" * 16)
    with pytest.raises(StaleFrame):
        guard.check("hv1", 1061.0, b"m" * 16)
    now[0] = 1200.0  # past twice the window: old nonces are forgotten, memory stays bounded
    guard.check("hv3", 1200.0, b"x" * 16)
    assert len(guard) == 1


def test_targets() -> None:
    assert matches(make_target("hv1"), "hv1", {}) and not matches(make_target("hv1"), "hv10", {})
    assert matches(make_target("hv*"), "hv10", {}) and not matches(make_target("hv*"), "db1", {})
    listed = make_target("a, b", as_list=True)
    assert listed.ids == ["a", "b"] and matches(listed, "b", {}) and not matches(listed, "c", {})
    labelled = make_target("role=hv,zone=a", as_labels=True)
    assert matches(labelled, "x", {"role": "hv", "zone": "a", "rack": "1"})
    assert not matches(labelled, "x", {"role": "hv"})
    bad_targets = (("role", {"as_labels": True}), (",", {"as_list": True}), ("a", {"as_list": True, "as_labels": True}))
    for bad, kw in bad_targets:
        with pytest.raises(ValueError):
            make_target(bad, **kw)


def test_job_schema_is_strict() -> None:
    job = Job(jid=new_jid(), fun="test.ping", target=Target(kind="glob", pattern="*"))
    assert decode(encode(job), Job) == job
    raw = {"jid": job.jid, "fun": "test.ping", "target": {"kind": "glob", "pattern": "*"}, "extra": 1}
    with pytest.raises(MalformedFrame, match=r"message violates its schema: .*extra"):
        decode(encode(raw), Job)
    with pytest.raises(MalformedFrame, match="kind"):
        decode(encode({"jid": job.jid, "fun": "x", "target": {"kind": "everyone"}}), Job)
    with pytest.raises(MalformedFrame, match="jid"):
        decode(encode({"jid": "../../etc", "fun": "x", "target": {"kind": "id", "ids": ["a"]}}), Job)


def test_tags() -> None:
    assert tag_matches("saltmarsh/job/", "saltmarsh/job/1/new")
    assert tag_matches("saltmarsh/job/*/ret/*", "saltmarsh/job/1/ret/hv1")
    assert not tag_matches("saltmarsh/job/*/ret/*", "saltmarsh/job/1/new")
    assert tag_matches("", "anything")
    assert agent_may_fire("hv1", "app/deployed") and agent_may_fire("hv1", "saltmarsh/virt/hv1/domain/vm/started")
    assert not agent_may_fire("hv1", "saltmarsh/virt/hv2/domain/vm/started")
    assert not agent_may_fire("hv1", "saltmarsh/key/hv1/accepted")
    assert not agent_may_fire("hv1", "saltmarsh/agent/hv1/../hv2/down")


def test_jids_are_time_ordered_and_unique() -> None:
    jids = [new_jid() for _ in range(1000)]
    assert jids == sorted(jids) and len(set(jids)) == 1000 and all(len(j) == 20 for j in jids)
    assert jid_time(jids[0]).year >= 2026


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_times_on_the_wire_are_finite_and_not_negative(bad: float) -> None:
    # A NaN would pass every comparison it meets and print as invalid JSON in `job show --json`.
    event = Events(events=[AgentEvent(tag="hv1/x", ts=bad)])
    with pytest.raises(MalformedFrame, match="ts"):
        decode(encode(event), Events)
    ret = Returns(returns=[JobReturn(jid=new_jid(), fun="test.ping", success=True, duration=bad)])
    with pytest.raises(MalformedFrame, match="duration"):
        decode(encode(ret), Returns)
    job = Job(jid=new_jid(), fun="test.ping", target=make_target("*"), timeout=bad if bad == bad else 0.0)
    with pytest.raises(MalformedFrame, match="timeout"):
        decode(encode(job), Job)


def test_the_replay_cache_forgets_by_the_second_and_remembers_inside_the_window() -> None:
    now = [1000.0]
    guard = ReplayGuard(60, clock=lambda: now[0])
    guard.check("hv1", now[0], b"a" * 16)  # kept until 1120, twice the window
    now[0] += 0.4
    guard.check("hv1", now[0], b"b" * 16)  # until 1121 (expiry rounds up to the second)
    now[0] = 1100.0
    with pytest.raises(ReplayedFrame):
        guard.check("hv1", now[0] - 50, b"a" * 16)  # inside the window by its timestamp: still known
    now[0] = 1120.5
    guard.check("hv1", now[0], b"c" * 16)
    assert len(guard) == 2  # a expired, b not yet
    now[0] = 1121.5
    guard.check("hv1", now[0], b"d" * 16)
    assert len(guard) == 2  # b expired; c and d
