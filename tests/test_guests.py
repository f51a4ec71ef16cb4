"""An agent that joined by token is a guest, not a hypervisor; a purged VM's seed token dies with it.

Issue 10, part 2: whoever reads a seed token can start an agent with that id on a
hypervisor (where libvirt answers), and it was accepted at once as a "hypervisor"
that showed `up` in `virt host-info` and became a placement candidate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from saltmarsh.agent.virt.seed import read_seed_iso
from saltmarsh.master.cloud.seeding import USER_NET_HOST

from .cluster import Cluster, wait_until


def test_a_token_joined_agent_is_no_hypervisor_until_the_operator_says_so(cloud: Cluster) -> None:
    issued = cloud.cli_json("key", "token", "intruder")
    # The same libvirt (test:///default) as the real hypervisors: only the master's record tells them apart.
    cloud.start_agent("intruder", join_token=issued["token"], master_key=issued["master_key"])
    cloud.wait_answering("intruder")  # it joined, and runs jobs
    assert "intruder" in cloud.cli_json("key", "list")["accepted"]
    assert "agent intruder joined with a one-time token (a guest" in cloud.master.log()
    assert set(cloud.cli_json("virt", "host-info")) == {"hv1", "hv2", "hv3"}
    dry = cloud.cli_json("virt", "init", "probe1", "1", "64", "--dry-run")
    assert "intruder" not in {c["host"] for c in dry["candidates"]} and dry["choice"] in {"hv1", "hv2", "hv3"}
    # The operator says it is a hypervisor: from then on it is one.
    cloud.cli("host", "role", "intruder", "hypervisor")
    wait_until(lambda: "intruder" in cloud.cli_json("virt", "host-info"), what="intruder in the inventory")
    assert "intruder" in {c["host"] for c in cloud.cli_json("virt", "init", "probe2", "1", "64",
                                                             "--dry-run")["candidates"]}
    # And back to a guest: gone from the inventory again.
    cloud.cli("host", "role", "intruder", "guest")
    assert "intruder" not in cloud.cli_json("virt", "host-info")
    # A master restart keeps the record.
    cloud.master.stop()
    cloud.start_master()
    cloud.wait_answering("intruder")
    assert "intruder" not in cloud.cli_json("virt", "host-info")


def test_purging_a_seeded_vm_revokes_its_unused_token(cloud: Cluster) -> None:
    created = cloud.cli_json("virt", "init", "gone1", "1", "64", "--seed", "--no-wait", "--host", "hv1",
                             "--master-address", USER_NET_HOST)
    cdrom = [d for d in created["vm"]["disks"].values() if d["device"] == "cdrom"]
    files = read_seed_iso(Path(cdrom[0]["file"]))
    agent_yaml: dict[str, Any] = yaml.safe_load(yaml.safe_load(files["user-data"])["write_files"][0]["content"])
    cloud.cli("virt", "purge", "gone1")
    assert "revoked 1 unused join token(s) of gone1" in cloud.master.log()
    # The token read from the (now deleted) seed no longer lets anyone in as gone1 (the stand-in for
    # the guest runs on this host, so it reaches the master on loopback, not at the guest's address).
    cloud.start_agent("gone1", **{k: v for k, v in agent_yaml.items() if k != "id"} | {"master": "127.0.0.1"})
    wait_until(lambda: "gone1" in cloud.pending(), what="gone1's key to wait as pending")
    wait_until(lambda: "refused join token from gone1: unknown join token" in cloud.master.log(),
               what="the refusal to be logged")
    assert "gone1" not in cloud.cli_json("key", "list")["accepted"]
