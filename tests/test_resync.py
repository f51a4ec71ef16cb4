"""Inventory resyncs (master/agents/resync.py): a digest first, the full inventory only when it changed.

Real daemons: an agent that comes up is sent the digest of what the master holds of it, and
sends its full inventory only when its own differs; the agent's log says which it was.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from .cluster import Cluster, wait_until

UNCHANGED = "inventory check: the master holds our last inventory, and nothing changed since"
SAME = "inventory check: the master holds our inventory"
DIFFERS = "inventory check: the master's inventory of this host differs from ours: sending ours"


def _resync(cluster: Cluster) -> dict[str, int]:
    from saltmarsh.master.control.client import MasterClient

    with MasterClient.from_config_dir(cluster.master_dir) as client:
        return dict(client.call("master.ping")["resync"])


def _restart(cluster: Cluster) -> int:
    """Restart the master; the agent's log size before, so that only what came after is looked at."""
    size = len(cluster.agents["hv1"].log())
    cluster.master.stop()
    cluster.start_master()
    return size


def _after(cluster: Cluster, offset: int, line: str) -> bool:
    return line in cluster.agents["hv1"].log()[offset:]


def _host_info(cluster: Cluster) -> dict[str, Any]:
    return dict(cluster.cli_json("virt", "host-info"))


@pytest.mark.timeout(120)
def test_an_agent_sends_its_inventory_only_when_the_masters_differs(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agents("hv1", virt={"vm_dir": str(tmp_path / "vms")})
    # First contact: the master held nothing of hv1, so the agent sent all of it.
    wait_until(lambda: DIFFERS in cluster.agents["hv1"].log(), what="the first inventory")
    wait_until(lambda: "hv1" in _host_info(cluster), what="hv1 in the inventory")

    offset = _restart(cluster)  # nothing changed: no libvirt call, nothing sent
    wait_until(lambda: _after(cluster, offset, UNCHANGED), timeout=30, what="the check after the restart")
    assert not _after(cluster, offset, DIFFERS)
    status = _resync(cluster)
    assert status["checked"] >= 1 and status["snapshots"] == 0, status
    assert _host_info(cluster)["hv1"]["libvirt"] is True

    # A VM made since: libvirt's events brought it to the master, so the agent, which takes its
    # inventory again (it ran a virt function since), finds the same digest as the master's.
    result = cluster.cli("run", "hv1", "virt.init", "name=made1", "cpus=1", "memory_mib=64", "--json")
    assert json.loads(result.stdout)["hv1"]["name"] == "made1"
    wait_until(lambda: cluster.cli_json("virt", "list")["hv1"].get("made1") == "running", what="made1 running")
    offset = _restart(cluster)
    wait_until(lambda: _after(cluster, offset, SAME), timeout=30, what="the check after the init")
    assert not _after(cluster, offset, DIFFERS)
    assert _resync(cluster)["snapshots"] == 0


@pytest.mark.timeout(120)
def test_an_inventory_the_master_lost_comes_back_from_the_agent(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    wait_until(lambda: "test" in cluster.cli_json("virt", "list").get("hv1", {}), what="hv1's VM in the inventory")
    offset = len(cluster.agents["hv1"].log())
    cluster.master.stop()
    with sqlite3.connect(cluster.master_dir / "state" / "jobs.sqlite") as db:  # as if the master lost it
        db.execute("DELETE FROM vms WHERE agent_id = 'hv1'")
        db.execute("DELETE FROM hypervisors WHERE agent_id = 'hv1'")
    cluster.start_master()
    wait_until(lambda: _after(cluster, offset, DIFFERS), timeout=30, what="the agent to send its inventory")
    wait_until(lambda: "test" in cluster.cli_json("virt", "list").get("hv1", {}), what="hv1's VM back")
    assert _resync(cluster)["snapshots"] >= 1
