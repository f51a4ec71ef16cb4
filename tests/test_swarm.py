"""Swarm mode (agent/swarm.py): many real agents in one process, each its own identity."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cluster import BIN, Cluster, Daemon, wait_until

IDS = [f"sw-{n:05d}" for n in range(3, 8)]


@pytest.mark.timeout(90)
def test_swarm_members_are_separate_agents(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    cluster.start_master()
    config_dir = cluster.agent_config("sw")
    swarm = Daemon("swarm", config_dir, [str(BIN / "python"), "-m", "saltmarsh.agent.swarm",
                                         "-c", str(config_dir), "--count", "5", "--first", "3"])
    swarm.start()
    try:
        wait_until(lambda: set(IDS) <= set(cluster.pending()), timeout=30, what="five pending keys")
        prints = cluster.cli_json("key", "finger")
        assert len({prints[agent_id] for agent_id in IDS}) == 5, prints  # one key per member
        cluster.cli("key", "accept", "--all")
        cluster.wait_answering(*IDS, timeout=30)
        result = cluster.cli("run", "--json", "*", "test.ping")
        assert json.loads(result.stdout) == {agent_id: True for agent_id in IDS}
        # Each member has its own root dir and private key file.
        for agent_id in IDS:
            assert (config_dir / "state" / agent_id / "pki" / "agent.key").stat().st_mode & 0o777 == 0o600
        # Cutting one member off leaves the others working (their session key is pushed to them).
        cluster.cli("key", "delete", IDS[0])
        result = cluster.cli("run", "--json", "*", "test.ping")
        assert json.loads(result.stdout) == {agent_id: True for agent_id in IDS[1:]}
    finally:
        assert swarm.stop() == 0, swarm.log()[-3000:]
        cluster.stop()


def test_swarm_refuses_a_bad_count(tmp_path: Path) -> None:
    result = subprocess.run([str(BIN / "python"), "-m", "saltmarsh.agent.swarm", "-c", str(tmp_path),
                             "--count", "0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--count must be >= 1" in result.stderr
