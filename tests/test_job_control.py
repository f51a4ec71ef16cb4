"""Jobs an operator can steer: deadlines held by the agent, a quick lane, job running/kill, --async and wait.

Real master and agent processes on loopback (tests/cluster.py), the CLI as a subprocess, libvirt's
test:///default driver; the lane test at the end drives agent/lanes.py in-process with real threads.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from saltmarsh.agent.lanes import Lane
from saltmarsh.protocol.jobcontrol import RETURN_GRACE_SECONDS

from .cluster import Cluster, wait_until

JID = re.compile(r"\b[0-9]{20,26}\b")
PINGS = 7


def running(cluster: Cluster, *target: str) -> list[dict[str, Any]]:
    """``saltmarsh job running [TARGET] --json``: one row per job an agent holds."""
    rows: list[dict[str, Any]] = cluster.cli_json("job", "running", *target)
    return rows


def submit(cluster: Cluster, *words: str) -> str:
    """``saltmarsh run --async WORDS``: the jid it prints."""
    jid = cluster.cli("run", "--async", *words).stdout.strip()
    assert JID.fullmatch(jid), jid
    return jid


def timed_ping(cluster: Cluster, agent: str) -> float:
    """Wall time of ``saltmarsh run AGENT test.ping``, as the operator sees it."""
    started = time.monotonic()
    assert cluster.cli_json("run", agent, "test.ping", "--timeout", "10") == {agent: True}
    return time.monotonic() - started


@pytest.mark.timeout(90)
def test_a_job_past_its_deadline_returns_timed_out_and_frees_its_slot(cluster: Cluster) -> None:
    cluster.start_agents("hv1", worker_threads=1)
    started = time.monotonic()
    result = cluster.cli("run", "hv1", "test.sleep", "600", "--timeout", "1", "--json", check=False)
    took = time.monotonic() - started
    assert result.returncode == 1
    missing = json.loads(result.stdout)["_missing"]
    # The caller is told by the agent itself, at the deadline, not by its own wait running out.
    assert missing["hv1"].startswith("timed out on the agent: test.sleep ran past its 1 s deadline: "
                                     "its thread is abandoned"), missing
    assert took < 1 + RETURN_GRACE_SECONDS + 5, took
    jid = next(j["jid"] for j in cluster.cli_json("job", "list") if j["fun"] == "test.sleep")
    recorded = cluster.cli_json("job", "show", jid)["returns"]["hv1"]
    assert recorded["success"] is False and recorded["error"]["type"] == "TimedOut"
    # The agent's only worker slot is free again: the next job runs at once, beside the abandoned thread.
    assert cluster.cli_json("run", "hv1", "test.sleep", "0.2", "--timeout", "5") == {"hv1": True}
    assert [(r["jid"], r["state"]) for r in running(cluster)] == [(jid, "abandoned")]

    # A job that never got a worker before its deadline is taken out of the queue, and says why.
    holder = submit(cluster, "hv1", "test.sleep", "600", "--timeout", "60")
    wait_until(lambda: any(r["jid"] == holder and r["state"] == "running" for r in running(cluster)),
               what="the holder to run")
    queued = cluster.cli("run", "hv1", "test.sleep", "0.1", "--timeout", "1", "--json", check=False)
    assert queued.returncode == 1
    assert "never started: all 1 workers of the jobs lane were busy" in json.loads(queued.stdout)["_missing"]["hv1"]
    assert cluster.cli("job", "kill", holder).stdout.startswith(f"hv1: killed job {holder}: its thread is abandoned")


@pytest.mark.timeout(180)
def test_ten_stuck_jobs_do_not_delay_a_ping_and_each_can_be_listed_and_killed(cluster: Cluster) -> None:
    cluster.start_agents("hv1", "hv2")  # 8 worker threads each, the default
    alone = [timed_ping(cluster, "hv1") for _ in range(PINGS)]
    stuck = [submit(cluster, "hv1", "test.sleep", "600", "--timeout", "600") for _ in range(10)]
    rows = wait_until(lambda: r if len(r := running(cluster, "hv1")) == 10 else None, what="ten jobs on hv1")
    assert sorted(r["jid"] for r in rows) == sorted(stuck)
    assert {r["fun"] for r in rows} == {"test.sleep"} and {r["agent"] for r in rows} == {"hv1"}
    assert sorted(r["state"] for r in rows).count("running") == 8, rows  # 8 workers; 2 wait for one
    assert all(r["elapsed"] >= 0 and r["started"] > 0 and r["deadline"] > 500 for r in rows), rows

    # hv2, idle, is pinged in turn with hv1, so both see the same load from the rest of the machine.
    beside, idle = zip(*[(timed_ping(cluster, "hv1"), timed_ping(cluster, "hv2")) for _ in range(PINGS)], strict=True)
    usual, loaded = statistics.median(idle), statistics.median(beside)
    print(f"\nrun AGENT test.ping, median of {PINGS}: hv1 {statistics.median(alone) * 1000:.0f} ms before; then "
          f"{loaded * 1000:.0f} ms with 10 stuck jobs, beside {usual * 1000:.0f} ms for idle hv2 pinged in turn "
          f"(max {max(beside) * 1000:.0f} / {max(idle) * 1000:.0f} ms)")
    assert loaded <= max(1.5 * usual, usual + 0.15), (alone, beside, idle)

    assert running(cluster, "hv2") == []
    human = cluster.cli("job", "running", "hv1").stdout.splitlines()
    assert human[0].split() == ["JID", "FUNCTION", "AGENT", "STATE", "STARTED", "ELAPSED"]
    assert sorted(line.split()[0] for line in human[1:]) == sorted(stuck)

    for jid in stuck:
        report = json.loads(cluster.cli("job", "kill", jid, "--json").stdout)
        assert report["hv1"]["outcome"] == "killed", report
    for jid in stuck:
        ret = cluster.cli_json("job", "show", jid)["returns"]["hv1"]
        assert ret["error"]["type"] == "Killed" and "test.sleep was killed before its 600 s deadline" in \
            ret["error"]["message"], ret
    left = running(cluster, "hv1")
    # Killed threads stuck in time.sleep cannot be stopped: they are listed as abandoned, and nothing else is.
    assert {r["state"] for r in left} <= {"abandoned"} and {r["jid"] for r in left} <= set(stuck), left
    assert cluster.cli_json("run", "hv1", "test.sleep", "0.1", "--timeout", "5") == {"hv1": True}
    again = cluster.cli("job", "kill", stuck[0], "hv1")
    assert again.stdout.startswith(f"hv1: already ended job {stuck[0]}: it was already given up on (Killed)") or \
        again.stdout.startswith(f"hv1: not running job {stuck[0]}"), again.stdout


@pytest.mark.timeout(90)
def test_kill_and_deadline_end_a_job_blocked_in_a_child_process(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    jid = submit(cluster, "hv1", "test.sleep_process", "600", "--timeout", "600")
    row = wait_until(lambda: next((r for r in running(cluster) if r["jid"] == jid and r["children"]), None),
                     what="the job's child process")
    (pid,) = row["children"]
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
    report = json.loads(cluster.cli("job", "kill", jid, "--json").stdout)["hv1"]
    assert report["outcome"] == "killed" and report["children"] == [pid], report
    assert report["how"] == f"its child process {pid} killed; the job ended", report
    assert not Path(f"/proc/{pid}").exists(), "the child outlived its job"
    assert jid not in {r["jid"] for r in running(cluster)}, "a job whose child was killed ended: nothing abandoned"
    waited = cluster.cli("job", "wait", jid, check=False)
    assert waited.returncode == 1
    assert waited.stdout.splitlines() == [
        "hv1:", f"    ERROR Killed: test.sleep_process was killed before its 600 s deadline: "
                f"its child process {pid} killed; the job ended"]
    # Its deadline does the same.
    timed = cluster.cli("run", "hv1", "test.sleep_process", "600", "--timeout", "1", "--json", check=False)
    reason = json.loads(timed.stdout)["_missing"]["hv1"]
    assert re.fullmatch(r"timed out on the agent: test.sleep_process ran past its 1 s deadline: "
                        r"its child process \d+ killed; the job ended", reason), reason
    assert running(cluster) == []
    finished = cluster.cli("job", "kill", jid, check=False)
    assert finished.returncode == 1 and "every expected agent answered it" in finished.stderr


CASES = [
    (["-L", "hv1,hv2,hv9", "test.echo", "hello"], []),
    (["hv*", "test.raise_error", "message=boom"], []),
    (["hv1", "test.sleep", "5", "--timeout", "1"], []),
    (["hv*", "test.ping"], ["--json"]),
    (["hv*", "test.sleep", "1", "--timeout", "10"], []),
    (["hv1", "test.sleep", "5", "--timeout", "1"], ["--json"]),
]


def _seen(result: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    return result.returncode, JID.sub("JID", result.stdout), JID.sub("JID", result.stderr)


@pytest.mark.timeout(150)
def test_async_then_wait_prints_and_exits_as_run_does(cluster: Cluster) -> None:
    cluster.start_agents("hv1", "hv2")
    codes = set()
    for words, output in CASES:
        direct = _seen(cluster.cli("run", *words, *output, check=False))
        jid = cluster.cli("run", "--async", *words, check=False).stdout.strip()
        assert JID.fullmatch(jid), (words, jid)
        waited = _seen(cluster.cli("job", "wait", jid, *output, check=False))
        assert waited == direct, (words, direct, waited)
        codes.add(direct[0])
    assert codes == {0, 1}

    # job show names the agents still running a job, by their own word, until it ends.
    jid = submit(cluster, "hv1", "test.sleep", "3", "--timeout", "30")
    wait_until(lambda: any(r["jid"] == jid and r["state"] == "running" for r in running(cluster, "hv1")),
               what="the job to run")
    shown = cluster.cli_json("job", "show", jid)
    assert shown["silent"]["hv1"].startswith("still running there (running, for "), shown
    assert shown["running"]["hv1"]["state"] == "running" and shown["running"]["hv1"]["fun"] == "test.sleep"
    assert "hv1: no return: still running there (running, for " in cluster.cli("job", "show", jid).stdout
    assert cluster.cli("job", "wait", jid).stdout.splitlines() == ["hv1:", "    true"]
    done = cluster.cli_json("job", "show", jid)
    assert done["silent"] == {} and done["running"] == {}
    short = cluster.cli("job", "wait", submit(cluster, "hv1", "test.sleep", "30", "--timeout", "60"),
                        "--timeout", "0.5", check=False)
    assert short.returncode == 1 and ": did not answer job " in short.stderr


@pytest.mark.timeout(30)
def test_a_lane_replaces_abandoned_threads_up_to_its_bound() -> None:
    lane = Lane("jobs", 1, max_abandoned=2)
    release = threading.Event()
    items = [lane.submit(release.wait) for _ in range(4)]
    try:
        wait_until(items[0].future.running, what="the first call to start")
        assert lane.abandon(items[0]) and lane.abandoned == 1
        wait_until(items[1].future.running, what="a new thread to take the freed slot")
        assert lane.abandon(items[1]) and lane.abandoned == 2
        # At the bound no thread replaces it: the next call waits for one of the stuck ones.
        assert not items[2].future.running() and lane.busy() == 0
        assert not lane.abandon(items[2]), "a call that has not started is cancelled, not abandoned"
    finally:
        release.set()
    wait_until(lambda: all(i.future.done() for i in items), what="the queue to drain once calls return")
    assert lane.abandoned == 0
    lane.shutdown()
