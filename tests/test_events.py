"""The event bus: tags raised by keys, agents and jobs; agents' own events; subscriptions by prefix and glob."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .cluster import BIN, Cluster, EventRecorder, wait_until


def _stream(cluster: Cluster, *args: str) -> subprocess.Popen[str]:
    """``saltmarsh events`` in a process of its own, returned once the master holds its subscription."""
    before = cluster.subscriptions()
    proc = subprocess.Popen(
        [str(BIN / "saltmarsh"), "-c", str(cluster.master_dir), "events", "--json", *args],
        stdout=subprocess.PIPE, text=True,
    )
    wait_until(lambda: cluster.subscriptions() > before, what="the subscriber's subscription")
    return proc


def _tags(proc: subprocess.Popen[str], timeout: float = 20) -> list[str]:
    out, _ = proc.communicate(timeout=timeout)
    return [json.loads(line)["tag"] for line in out.splitlines()]


def test_key_agent_and_job_events_stream_in_order(cluster: Cluster) -> None:
    watcher = _stream(cluster, "saltmarsh/", "--idle-timeout", "3")
    cluster.start_agents("hv1")
    jid = cluster.cli_json("job", "list")[0]["jid"]
    cluster.cli("key", "delete", "hv1")
    tags = [t for t in _tags(watcher) if not t.endswith("/heartbeat")]
    expected = [
        "saltmarsh/key/hv1/pending",
        "saltmarsh/key/hv1/accepted",
        "saltmarsh/agent/hv1/up",
        f"saltmarsh/job/{jid}/new",
        f"saltmarsh/job/{jid}/ret/hv1",
        "saltmarsh/agent/hv1/down",
        "saltmarsh/key/hv1/deleted",
    ]
    positions = [tags.index(t) for t in expected]
    assert positions == sorted(positions), tags


def test_glob_subscription_and_count(cluster: Cluster) -> None:
    cluster.start_agents("hv1", "hv2")
    watcher = _stream(cluster, "saltmarsh/job/*/ret/*", "--count", "2")
    cluster.cli("run", "*", "test.ping")
    tags = _tags(watcher)
    assert len(tags) == 2 and all("/ret/" in t for t in tags)
    assert {t.rsplit("/", 1)[1] for t in tags} == {"hv1", "hv2"}


def test_agent_fires_its_own_events_but_not_the_masters(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    recorder = EventRecorder(cluster, "", idle_timeout=30)
    recorder.ready("hv1", "app/probe")
    cluster.cli("run", "hv1", "event.send", "app/deploy/done", '{"version": 3}')
    cluster.cli("run", "hv1", "event.send", "saltmarsh/agent/hv1/custom/thing", "1")
    cluster.cli("run", "hv1", "event.send", "saltmarsh/job/20250101000000000000/ret/hv2", "forged")
    cluster.cli("run", "hv1", "event.send", "saltmarsh/agent/hv2/down", "forged")
    cluster.cli("run", "hv1", "event.send", "app/last", "1")  # events of one agent arrive in order
    wait_until(lambda: "app/last" in recorder.tags(), what="the last event")
    by_tag = {e.tag: e for e in recorder.events}
    assert by_tag["app/deploy/done"].data == {"version": 3} and by_tag["app/deploy/done"].agent == "hv1"
    assert "saltmarsh/agent/hv1/custom/thing" in by_tag
    assert "saltmarsh/job/20250101000000000000/ret/hv2" not in by_tag
    assert "saltmarsh/agent/hv2/down" not in by_tag
    log = cluster.master.log()
    assert "refused event from hv1: tag 'saltmarsh/job/20250101000000000000/ret/hv2'" in log
    assert "refused event from hv1: tag 'saltmarsh/agent/hv2/down'" in log


def test_many_events_all_arrive_in_batches(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    watcher = _stream(cluster, "bulk/", "--count", "5000")
    assert cluster.cli_json("run", "hv1", "test.fire_events", "5000", "tag=bulk/e") == {"hv1": 5000}
    out, _ = watcher.communicate(timeout=30)
    numbers = [json.loads(line)["data"]["n"] for line in out.splitlines()]
    assert sorted(numbers) == list(range(5000))


def test_control_socket_permissions_are_the_access_control(cluster: Cluster) -> None:
    sock = cluster.control_socket
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    assert oct(sock.parent.stat().st_mode & 0o777) == "0o700"
    assert oct(Path(cluster.master_dir / "state" / "pki" / "master.key").stat().st_mode & 0o777) == "0o600"
