"""Jobs are deduplicated by jid on the agent, returns survive a master crash, the cache survives restarts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from saltmarsh.protocol.jids import new_jid
from saltmarsh.protocol.messages import Job, Target
from saltmarsh.protocol.topics import BROADCAST

from .cluster import BIN, Cluster, wait_until
from .standin import standing_in_for_the_master


def test_agent_runs_a_jid_once_even_if_published_twice(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    with standing_in_for_the_master(cluster) as publisher:
        publisher.wait_for_subscribers({BROADCAST}, timeout=15)  # the agent is connected again
        job = Job(jid=new_jid(), fun="test.echo", target=Target(kind="glob", pattern="*"), args=["once"])
        for _ in range(2):  # two distinct frames (fresh nonces), the same jid
            publisher.publish(BROADCAST, job)
        log = cluster.agents["hv1"]
        wait_until(lambda: f"job {job.jid} already run here" in log.log(), what="the duplicate to be dropped")
        assert log.log().count(f"job {job.jid}: test.echo") == 1
    # The master never sent that job: now it is back, the agent's return for it is refused, not stored.
    wait_until(lambda: f"refused return from hv1 for job {job.jid}, which was not sent to it" in cluster.master.log(),
               timeout=20, what="the foreign return to be refused")
    assert cluster.cli("job", "show", job.jid, check=False).returncode == 1


def test_return_of_a_job_survives_a_master_crash(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    runner = subprocess.Popen(
        [str(BIN / "saltmarsh"), "-c", str(cluster.master_dir), "run", "hv1", "test.sleep", "2", "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_until(lambda: "test.sleep" in cluster.agents["hv1"].log(), what="the job to start")
    jid = cluster.cli_json("job", "list")[0]["jid"]
    cluster.master.stop(9)  # kill -9 while the agent is still sleeping
    runner.kill()
    runner.wait()
    # The job finishes while no master listens; the agent keeps its return (and says so).
    wait_until(lambda: f"job {jid} finished; its return is spooled" in cluster.agents["hv1"].log(),
               what="the job to finish with no master")
    cluster.start_master()
    shown = wait_until(
        lambda: (j := cluster.cli_json("job", "show", jid))["returns"] and j, timeout=20, what="the late return"
    )
    assert shown["returns"]["hv1"]["result"] is True and shown["silent"] == {}


def test_job_cache_survives_master_restart(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    cluster.cli("run", "hv1", "test.echo", "remember me")
    jid = cluster.cli_json("job", "list")[0]["jid"]
    cluster.master.stop()
    cluster.start_master()
    assert cluster.cli_json("job", "show", jid)["returns"]["hv1"]["result"] == "remember me"


def test_auto_accept(tmp_path: Path) -> None:
    auto = Cluster(tmp_path, auto_accept=True)
    auto.start_master()
    try:
        auto.start_agent("hv1")
        auto.wait_answering("hv1")
        assert json.loads(auto.cli("key", "list", "--json").stdout)["accepted"] == ["hv1"]
    finally:
        auto.stop()
