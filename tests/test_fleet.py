"""The fleet view (``saltmarsh agent list|show``): keys, up/down and since when, labels, version, jobs, libvirt.

A real master and agent processes on loopback (tests/cluster.py), libvirt's test:///default driver,
the CLI as a subprocess.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from saltmarsh.protocol.version import VERSION

from .cluster import Cluster, wait_until

JID = re.compile(r"\b[0-9]{20,26}\b")


def fleet(cluster: Cluster, *words: str) -> dict[str, dict[str, Any]]:
    """``saltmarsh agent list [WORDS] --json`` by agent id (the output must be valid JSON)."""
    rows: list[dict[str, Any]] = json.loads(cluster.cli("agent", "list", *words, "--json").stdout)
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)
    return {row["id"]: row for row in rows}


@pytest.mark.timeout(150)
def test_agent_list_shows_every_agent_and_says_who_is_down_and_since_when(cluster: Cluster) -> None:
    before = time.time()
    cluster.start_agent("a1", labels={"zone": "a"})
    cluster.start_agent("a2", labels={"zone": "b"})
    cluster.accept("a1", "a2")
    cluster.start_agent("p1")  # its key stays pending
    wait_until(lambda: "p1" in cluster.pending(), what="p1's key to be pending")
    # libvirt is known from the inventory snapshot each agent pushes as it comes up.
    wait_until(lambda: all(fleet(cluster)[a]["libvirt"] is True for a in ("a1", "a2")), what="both inventories")

    rows = fleet(cluster)
    assert set(rows) == {"a1", "a2", "p1"}
    for agent, zone in (("a1", "a"), ("a2", "b")):
        row = rows[agent]
        assert (row["key"], row["state"], row["labels"], row["version"]) == ("accepted", "up", {"zone": zone}, VERSION)
        assert before <= row["since"] <= row["last_seen"] <= time.time()
        assert row["address"].startswith("127.0.0.1"), row
        assert (row["running"], row["abandoned"], row["role"]) == (0, 0, "hypervisor")
    assert (rows["p1"]["key"], rows["p1"]["state"], rows["p1"]["since"], rows["p1"]["running"]) == \
        ("pending", "never connected", None, None)

    # A job the agent holds is counted by the agent itself.
    jid = cluster.cli("run", "--async", "a1", "test.sleep", "60", "--timeout", "60").stdout.strip()
    assert JID.fullmatch(jid)
    wait_until(lambda: fleet(cluster)["a1"]["running"] == 1, what="a1 to say it runs one job")
    assert fleet(cluster, "-l", "zone=b").keys() == {"a2"}

    stopped = time.time()
    assert cluster.agents["a2"].stop() == 0
    down = wait_until(lambda: (row := fleet(cluster)["a2"])["state"] == "down" and row, timeout=30,
                      what="a2 to be down")
    assert stopped <= down["since"] <= time.time() and down["last_seen"] <= down["since"]
    assert down["running"] is None and "offline since" in down["running_note"]

    text = cluster.cli("agent", "list").stdout.splitlines()
    assert text[0].split()[:4] == ["ID", "KEY", "STATE", "SINCE"]
    line = next(line for line in text if line.startswith("a2 "))
    assert line.split()[1:3] == ["accepted", "down"]
    assert re.search(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b", line), line
    assert next(line for line in text if line.startswith("a1 ")).split()[5] == "1"  # its one job

    shown = json.loads(cluster.cli("agent", "show", "a1", "--json").stdout)
    assert shown["id"] == "a1" and shown["running"] == 1 and shown["fingerprint"]
    assert "since: " in cluster.cli("agent", "show", "a2").stdout
    missing = cluster.cli("agent", "show", "nobody", check=False)
    assert missing.returncode == 1 and "no agent 'nobody'" in missing.stderr
    cluster.cli("job", "kill", jid)
