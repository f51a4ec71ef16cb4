"""Presence (master/agents/presence.py) in-process: up and down with their events, reasons for silence, restarts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from saltmarsh.master.agents.presence import MISSED_HEARTBEATS, Presence
from saltmarsh.master.events.bus import Event, EventBus
from saltmarsh.master.store.jobcache import JobCache


def _presence(tmp_path: Path, heartbeat: float = 10.0) -> tuple[Presence, list[Event], JobCache]:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe("saltmarsh/agent/", events.append)
    cache = JobCache(tmp_path / "c.sqlite")
    return Presence(cache, bus, heartbeat), events, cache


@pytest.mark.timeout(10)
def test_first_message_brings_an_agent_up_once(tmp_path: Path) -> None:
    presence, events, _ = _presence(tmp_path)
    assert presence.why_silent("hv1") == "never connected"
    presence.hello("hv1", {"zone": "a"}, "1.2", b"route-1")
    presence.heartbeat("hv1", b"route-2")
    presence.seen("hv1", b"route-3")
    assert [e.tag for e in events] == ["saltmarsh/agent/hv1/up", "saltmarsh/agent/hv1/heartbeat"]
    assert events[0].data == {"id": "hv1", "labels": {"zone": "a"}}
    assert presence.is_up("hv1") and presence.up_agents() == ["hv1"]
    assert presence.routing_id("hv1") == b"route-3" and presence.labels("hv1") == {"zone": "a"}
    assert presence.why_silent("hv1").startswith("timed out (agent up, last seen ")


@pytest.mark.timeout(10)
def test_silence_past_the_missed_heartbeats_marks_it_down(tmp_path: Path) -> None:
    presence, events, _ = _presence(tmp_path, heartbeat=0.05)
    presence.hello("hv1", {}, "1", b"r")
    presence.sweep()
    assert presence.is_up("hv1")  # within MISSED_HEARTBEATS intervals
    state = presence.get("hv1")
    assert state is not None
    state.last_seen -= 0.05 * MISSED_HEARTBEATS + 1  # as if it fell silent that long ago
    presence.sweep()
    assert not presence.is_up("hv1")
    assert events[-1].tag == "saltmarsh/agent/hv1/down" and events[-1].data == {"id": "hv1", "reason": "no heartbeat"}
    assert presence.why_silent("hv1").startswith("offline since ")


@pytest.mark.timeout(10)
def test_an_unaccepted_agent_is_routable_but_never_up(tmp_path: Path) -> None:
    presence, events, cache = _presence(tmp_path)
    presence.note_unaccepted("new1", {"role": "hv"}, "1", b"r")
    assert presence.routing_id("new1") == b"r" and not presence.is_up("new1") and events == []
    assert presence.why_silent("new1") == "never connected"
    assert cache.agents() == []  # nothing stored for a key that was never accepted


@pytest.mark.timeout(10)
def test_after_a_restart_nobody_is_up_and_each_says_since_when(tmp_path: Path) -> None:
    presence, _, cache = _presence(tmp_path)
    presence.hello("hv1", {"zone": "b"}, "1", b"r")
    presence.hello("hv2", {}, "1", b"r")
    presence.mark_down("hv2", "key rejected")
    presence.sweep()  # flushes last-seen times
    cache.close()
    restarted, events, _ = _presence(tmp_path)
    assert restarted.up_agents() == [] and events == []
    assert restarted.labels("hv1") == {"zone": "b"}
    assert restarted.why_silent("hv1").startswith("offline since ")
    assert restarted.why_silent("hv2").startswith("offline since ")
    restarted.seen("hv1", b"r2")
    assert [e.tag for e in events] == ["saltmarsh/agent/hv1/up"]


@pytest.mark.timeout(10)
def test_forget_drops_everything_known(tmp_path: Path) -> None:
    presence, events, cache = _presence(tmp_path)
    presence.hello("hv1", {}, "1", b"r")
    presence.forget("hv1")
    assert events[-1].data == {"id": "hv1", "reason": "key deleted"}
    assert presence.get("hv1") is None and cache.agents() == []
    assert presence.why_silent("hv1") == "never connected"
    before = time.time()
    presence.seen("hv1", b"r")  # it may come back as a new agent
    state = presence.get("hv1")
    assert state is not None and state.up and state.first_seen >= before
