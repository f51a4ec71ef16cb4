"""Daemon lifecycle: clean stops, reconnection after a master restart, key changes without restarts."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from .cluster import BIN, Cluster, wait_until


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_daemons_stop_cleanly_with_exit_0(cluster: Cluster, sig: int) -> None:
    cluster.start_agents("hv1")
    assert cluster.agents["hv1"].stop(sig) == 0
    assert cluster.master.stop(sig) == 0
    assert "agent stopped" in cluster.agents["hv1"].log()
    assert "master stopped" in cluster.master.log()
    assert not cluster.control_socket.exists()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_agents_reconnect_after_master_restart(cluster: Cluster, how: int) -> None:
    cluster.start_agents("hv1", "hv2")
    cluster.master.stop(how)
    assert cluster.cli("run", "*", "test.ping", check=False).returncode == 1  # nobody home
    cluster.start_master()
    # No operator action: the agents' sockets reconnect and the persisted session key still works.
    cluster.wait_answering("hv1", "hv2")
    assert cluster.cli_json("run", "*", "test.echo", "back") == {"hv1": "back", "hv2": "back"}
    assert cluster.agents["hv1"].alive() and cluster.agents["hv2"].alive()


def test_agent_reauthenticates_when_session_key_rotates(cluster: Cluster) -> None:
    cluster.start_agents("hv1", "hv2", "hv3")
    cluster.cli("key", "delete", "hv3")  # rotates the publish session key
    # The very next job reaches the agents still accepted, with no restart.
    assert cluster.cli_json("run", "*", "test.ping") == {"hv1": True, "hv2": True}
    assert "session key rotated" in cluster.master.log()


def test_reject_then_accept_again_without_restart(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    cluster.cli("key", "reject", "hv1")
    assert cluster.cli_json("key", "list")["rejected"] == ["hv1"]
    result = cluster.cli("run", "hv1", "test.ping", check=False)
    assert result.returncode == 1 and "no accepted agent matches" in result.stderr
    cluster.cli("key", "accept", "hv1")
    cluster.wait_answering("hv1")


def test_deleted_agent_resubmits_and_can_be_accepted_again(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    cluster.cli("key", "delete", "hv1")
    wait_until(lambda: "hv1" in cluster.pending(), what="hv1 to submit its key again")
    cluster.cli("key", "accept", "hv1")
    cluster.wait_answering("hv1")
    assert cluster.agents["hv1"].alive()


def test_key_commands_on_unknown_ids_fail_clearly(cluster: Cluster) -> None:
    for action in ("accept", "reject", "delete", "finger"):
        result = cluster.cli("key", action, "nobody", check=False)
        assert result.returncode == 1 and "no key for agent 'nobody'" in result.stderr, action
    result = cluster.cli("key", "delete", "../etc", check=False)
    assert result.returncode == 1 and "not a safe name" in result.stderr


def test_cli_without_master_says_so(tmp_path: Path) -> None:
    (tmp_path / "master.yaml").write_text("root_dir: nowhere\n")
    result = subprocess.run([str(BIN / "saltmarsh"), "-c", str(tmp_path), "key", "list"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "is saltmarsh-master running?" in result.stderr


def test_key_finger_shows_master_and_agents(cluster: Cluster) -> None:
    cluster.start_agent("hv1")
    wait_until(lambda: "hv1" in cluster.pending())
    prints = cluster.cli_json("key", "finger")
    assert set(prints) == {"master", "hv1"}
    assert all(len(fp.split(":")) == 32 for fp in prints.values())
    assert cluster.cli_json("key", "finger", "hv1") == {"hv1": prints["hv1"]}
