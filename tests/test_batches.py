"""Batches (``saltmarsh run -b N|P%``): at most N agents at a time, --batch-wait, --fail-fast, run by the master.

Six real agent processes and a master on loopback (tests/cluster.py), the CLI as a subprocess; the
batch's own events (``saltmarsh/batch/<batch>/start|ret|silent/<agent>``, ``…/done``) are recorded
through the Python API, and their timestamps (set by the master as each job goes out and each
return comes in) say how many agents ran at once. ``batch_size`` is checked in-process.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from saltmarsh.master.errors import CommandError
from saltmarsh.master.jobs.batches import batch_size
from saltmarsh.master.service.types.jobs import BatchSize

from .cluster import BIN, Cluster, EventRecorder, wait_until

AGENTS = tuple(f"b{i}" for i in range(1, 7))
# Batch events only: the agents' heartbeats would keep the recorder from ever going idle. An agent
# may fire the probe (it is outside saltmarsh/), and it matches too.
PATTERN = "*batch*"
PROBE = "probe/batch"


@pytest.fixture(scope="module")
def six(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master and six accepted agents, shared by this module's tests (none of them stops one)."""
    cluster = Cluster(tmp_path_factory.mktemp("batches"))
    cluster.start_master()
    try:
        for agent in AGENTS:
            cluster.start_agent(agent)
        wait_until(lambda: set(AGENTS) <= set(cluster.pending()), timeout=60, what="six keys pending")
        cluster.cli("key", "accept", "--all")
        cluster.wait_answering(*AGENTS, timeout=60)
        yield cluster
    finally:
        cluster.stop()


def record(cluster: Cluster, idle: float = 3.0) -> EventRecorder:
    """A live recorder of batch events (the probe has been seen, so none of the batch's can be missed)."""
    recorder = EventRecorder(cluster, PATTERN, idle_timeout=idle)
    recorder.ready(AGENTS[0], PROBE)
    return recorder


def spans(recorder: EventRecorder) -> dict[str, tuple[float, float]]:
    """Per agent, when its job went out and when its return came in (the master's clock)."""
    starts = {e.data["id"]: e.ts for e in recorder.events if "/start/" in e.tag}
    ends = {e.data["id"]: e.ts for e in recorder.events if "/ret/" in e.tag or "/silent/" in e.tag}
    assert set(starts) == set(ends), (starts, ends)
    return {agent: (starts[agent], ends[agent]) for agent in starts}


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one moment (an end before a start at the same instant)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


@pytest.mark.timeout(10)
def test_batch_size_counts_and_rounds_percentages_down_but_never_to_zero() -> None:
    assert batch_size(BatchSize(count=2), 6) == 2
    assert batch_size(BatchSize(count=10), 6) == 6  # never more than there are
    assert batch_size(BatchSize(percent=50), 6) == 3
    assert batch_size(BatchSize(percent=34), 6) == 2  # 2.04
    assert batch_size(BatchSize(percent=66), 6) == 3  # 3.96: a percentage is a ceiling on who is out at once
    assert batch_size(BatchSize(percent=10), 6) == 1  # 0.6, but a batch must move
    assert batch_size(BatchSize(percent=29), 100) == 29  # 28.999… in floating point
    assert batch_size(BatchSize(percent=100), 7) == 7
    with pytest.raises(CommandError):
        batch_size(BatchSize(), 6)
    with pytest.raises(CommandError):
        batch_size(BatchSize(count=1, percent=50), 6)


@pytest.mark.timeout(150)
def test_a_batch_of_two_over_six_never_has_more_than_two_running(six: Cluster) -> None:
    recorder = record(six)
    result = six.cli("run", "-b", "2", "b*", "test.sleep", "1", "--json")
    assert json.loads(result.stdout) == {agent: True for agent in AGENTS}
    assert "6 agents, 2 at a time" in result.stderr
    recorder.close()
    done = [e for e in recorder.events if e.tag.endswith("/done")]
    assert len(done) == 1 and done[0].data == {"not_started": {}}
    timing = spans(recorder)
    assert set(timing) == set(AGENTS)
    # Each job sleeps 1 s, so a pair that started together overlaps: exactly two at once, never three.
    assert most_at_once(list(timing.values())) == 2, timing
    # One job per agent, each in the job cache under its own jid.
    jids = {e.data["jid"] for e in recorder.events if "/start/" in e.tag}
    cached = {job["jid"]: job for job in six.cli_json("job", "list")}
    assert len(jids) == 6 and all(cached[jid]["fun"] == "test.sleep" and cached[jid]["expected"] == 1
                                  for jid in jids)


@pytest.mark.timeout(120)
def test_batch_wait_pauses_after_each_agent_before_the_next_starts(six: Cluster) -> None:
    recorder = record(six)
    result = six.cli("run", "-b", "1", "--batch-wait", "0.5", "-L", "b1,b2,b3", "test.ping", "--json")
    assert json.loads(result.stdout) == {"b1": True, "b2": True, "b3": True}
    recorder.close()
    timing = spans(recorder)
    order = sorted(timing, key=lambda agent: timing[agent][0])
    assert order == ["b1", "b2", "b3"]  # in id order, one at a time
    for before, after in itertools.pairwise(order):
        assert timing[after][0] - timing[before][1] >= 0.5, timing


@pytest.mark.timeout(120)
def test_fail_fast_stops_starting_agents_and_names_those_it_never_started(six: Cluster) -> None:
    result = six.cli("run", "-b", "1", "--fail-fast", "b*", "test.raise_error", "--json", check=False)
    assert result.returncode == 1
    shown = json.loads(result.stdout)
    assert shown["b1"] == {"error": {"type": "RuntimeError", "message": "raised on purpose"}}
    why = "not started: the batch stopped after b1 failed (--fail-fast)"
    assert shown["_missing"] == {agent: why for agent in AGENTS[1:]}
    text = six.cli("run", "-b", "1", "--fail-fast", "b*", "test.raise_error", check=False)
    assert text.returncode == 1
    assert "b6: not started (batch " in text.stderr and "the batch stopped after b1 failed" in text.stderr
    # Without --fail-fast every agent is tried, and each failure is reported as run reports it.
    every = six.cli("run", "-b", "3", "b*", "test.raise_error", "--json", check=False)
    assert every.returncode == 1
    assert sorted(json.loads(every.stdout)) == list(AGENTS)


@pytest.mark.timeout(120)
def test_percentages_round_down_to_at_least_one_and_bad_sizes_are_usage_errors(six: Cluster) -> None:
    for size, at_once in (("50%", 3), ("34%", 2), ("10%", 1), ("100%", 6)):
        result = six.cli("run", "-b", size, "b*", "test.ping", "--json")
        assert f"6 agents, {at_once} at a time" in result.stderr, (size, result.stderr)
        assert json.loads(result.stdout) == {agent: True for agent in AGENTS}
    for words in (["-b", "0"], ["-b", "0%"], ["-b", "150%"], ["-b", "nan%"], ["-b", "x"], ["--fail-fast"],
                  ["--batch-wait", "1"], ["-b", "1", "--async"]):
        result = six.cli("run", *words, "b*", "test.ping", check=False)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (words, result.stderr)


@pytest.mark.timeout(120)
def test_a_batch_goes_on_when_the_cli_that_started_it_goes_away(six: Cluster) -> None:
    recorder = record(six, idle=5.0)
    cli = subprocess.Popen([str(BIN / "saltmarsh"), "-c", str(six.master_dir), "run", "-b", "1", "b*",
                            "test.sleep", "0.3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: any("/start/" in tag for tag in recorder.tags()), what="the batch to start")
    finally:
        cli.kill()
        cli.wait()
    wait_until(lambda: any(tag.endswith("/done") for tag in recorder.tags()), timeout=60,
               what="the batch to finish without its CLI")
    recorder.close()
    returned: dict[str, Any] = {e.data["id"]: e.data for e in recorder.events if "/ret/" in e.tag}
    assert sorted(returned) == list(AGENTS) and all(ret["success"] for ret in returned.values())


@pytest.mark.timeout(30)
def test_the_help_names_the_batch_options() -> None:
    result = subprocess.run([str(BIN / "saltmarsh"), "run", "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for option in ("-b N|P%", "--batch-wait S", "--fail-fast"):
        assert option in result.stdout


@pytest.mark.timeout(120)
def test_an_agent_that_is_down_is_named_at_once_and_never_started(cluster: Cluster) -> None:
    cluster.start_agents("d1", "d2")
    assert cluster.agents["d2"].stop() == 0
    wait_until(lambda: cluster.cli_json("agent", "list")[1]["state"] == "down", timeout=30, what="d2 to be down")
    result = cluster.cli("run", "-b", "1", "d*", "test.ping", "--json", check=False)
    assert result.returncode == 1
    shown = json.loads(result.stdout)
    assert shown["d1"] is True and shown["_missing"]["d2"].startswith("offline since "), shown
    assert "1 agent, 1 at a time" in result.stderr and "d2: did not answer job " in result.stderr
