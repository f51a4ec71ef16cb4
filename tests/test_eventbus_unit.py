"""The event bus's tag index (master/events/bus.py) in-process: subscriptions filed once, matched by tag_matches."""

from __future__ import annotations

import random

import pytest

from saltmarsh.master.events.bus import Event, EventBus, compile_pattern, index_key
from saltmarsh.protocol.tags import tag_matches

PATTERNS = ["", "*", "saltmarsh/", "saltmarsh/job/", "saltmarsh/job/*/ret/*", "saltmarsh/agent/*/up",
            "saltmarsh/agent/hv1", "saltmarsh/agent/hv1/", "saltmarsh/virt/hv?/domain/*", "app/[ab]*", "app"]
TAGS = ["saltmarsh/job/20250101000000000001/new", "saltmarsh/job/20250101000000000001/ret/hv1",
        "saltmarsh/agent/hv1/up", "saltmarsh/agent/hv10/up", "saltmarsh/agent/hv1/heartbeat",
        "saltmarsh/virt/hv2/domain/vm/started", "saltmarsh/virt/hv22/domain/vm/started", "app/a/b", "app/c",
        "application", "app", "other/thing"]


@pytest.mark.timeout(10)
def test_index_key_is_the_literal_start_cut_back_to_a_slash() -> None:
    assert index_key("saltmarsh/job/*/ret/*") == "saltmarsh/job/"
    assert index_key("saltmarsh/agent/*/up") == "saltmarsh/agent/"
    assert index_key("saltmarsh/agent/hv1") == "saltmarsh/agent/"  # a prefix that ends mid-part
    assert index_key("saltmarsh/") == "saltmarsh/"
    assert index_key("*") == "" and index_key("") == "" and index_key("app") == ""
    assert compile_pattern("saltmarsh/") is None and compile_pattern("") is None  # the group is the test


@pytest.mark.timeout(10)
def test_delivery_is_exactly_what_tag_matches_says() -> None:
    bus = EventBus()
    got: dict[str, list[str]] = {p: [] for p in PATTERNS}
    for pattern in PATTERNS:
        bus.subscribe(pattern, lambda e, p=pattern: got[p].append(e.tag))
    for tag in TAGS:
        bus.fire(tag)
    for pattern in PATTERNS:
        assert got[pattern] == [t for t in TAGS if tag_matches(pattern, t)], pattern
    assert bus.published == len(TAGS) and bus.subscriptions == len(PATTERNS)


@pytest.mark.timeout(20)
def test_random_patterns_and_tags_agree_with_tag_matches() -> None:
    rng = random.Random(12)
    parts = ["saltmarsh", "job", "agent", "hv1", "hv2", "ret", "*", "?v1", "[ah]*", "up"]
    for _ in range(300):
        bus = EventBus()
        pattern = "/".join(rng.choice(parts) for _ in range(rng.randint(1, 4))) + rng.choice(["", "/"])
        tags = ["/".join(rng.choice([p for p in parts if not set(p) & set("*?[")]) for _ in range(rng.randint(1, 5)))
                for _ in range(20)]
        seen: list[str] = []
        bus.subscribe(pattern, lambda e, seen=seen: seen.append(e.tag))
        for tag in tags:
            bus.fire(tag)
        assert seen == [t for t in tags if tag_matches(pattern, t)], (pattern, tags)


@pytest.mark.timeout(10)
def test_unsubscribe_empties_the_group_and_a_callback_may_unsubscribe_itself() -> None:
    bus = EventBus()
    seen: list[Event] = []
    handles: list[int] = []

    def once(event: Event) -> None:
        seen.append(event)
        bus.unsubscribe(handles[0])

    handles.append(bus.subscribe("saltmarsh/job/*/ret/*", once))
    other = bus.subscribe("saltmarsh/job/", lambda e: seen.append(e))
    bus.fire("saltmarsh/job/1/ret/hv1", {"n": 1}, agent="hv1", ts=5.0)
    bus.fire("saltmarsh/job/1/ret/hv2")
    assert [(e.tag, e.agent) for e in seen] == [("saltmarsh/job/1/ret/hv1", "hv1")] * 2 + [
        ("saltmarsh/job/1/ret/hv2", "")]
    assert seen[0].ts == 5.0 and seen[0].data == {"n": 1}
    bus.unsubscribe(other)
    bus.unsubscribe(other)  # unknown handles are ignored
    assert bus.subscriptions == 0


@pytest.mark.timeout(10)
def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    bus = EventBus()
    seen: list[str] = []

    def broken(_event: Event) -> None:
        raise RuntimeError("boom")

    bus.subscribe("a/", broken)
    bus.subscribe("a/", lambda e: seen.append(e.tag))
    bus.fire("a/b")
    assert seen == ["a/b"]
