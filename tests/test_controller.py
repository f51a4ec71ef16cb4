"""The cloud controller through real master and agents on libvirt's test:///default driver."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .cluster import BIN, Cluster, wait_until
from .conftest import HOSTS


def test_host_info_and_list_from_the_inventory(cloud: Cluster) -> None:
    hosts = cloud.cli_json("virt", "host-info")
    assert set(hosts) == set(HOSTS)
    assert all(h["up"] and h["libvirt"] and h["node_info"]["cpus"] == 16 for h in hosts.values())
    assert hosts["hv1"]["freemem"] == 3072 - 2048 and hosts["hv1"]["freecpu"] == 14
    assert cloud.cli_json("virt", "list") == {h: {"test": "running"} for h in HOSTS}


def test_init_is_placed_by_free_memory_then_fewest_vms(cloud: Cluster) -> None:
    first = cloud.cli_json("virt", "init", "web1", "1", "512")
    assert first["host"] in HOSTS and first["vm"]["state"] == "running"
    second = cloud.cli_json("virt", "init", "web2", "1", "512")
    assert second["host"] != first["host"]  # the first host has less free memory now
    third = cloud.cli_json("virt", "init", "web3", "1", "256", "--label", "zone=b")
    assert third["host"] == "hv3"
    vms = cloud.cli_json("virt", "list")
    assert {n for states in vms.values() for n in states} == {"test", "web1", "web2", "web3"}


def test_dry_run_explains_every_candidate(cloud: Cluster) -> None:
    cloud.cli("host", "maintenance", "on", "hv2")
    plan = cloud.cli_json("virt", "init", "big", "2", "900", "--label", "zone=a", "--dry-run")
    reasons = {c["host"]: c["dropped"] for c in plan["candidates"]}
    assert reasons["hv1"] == "" and plan["choice"] == "hv1"
    assert reasons["hv2"] == "in maintenance"
    assert reasons["hv3"].startswith("labels do not match")
    assert "web" not in json.dumps(cloud.cli_json("virt", "list"))  # nothing was created
    nobody = cloud.cli("virt", "init", "big", "2", "2G", "--dry-run", check=False)
    assert nobody.returncode == 1  # a plan that places nowhere is a failure a script can see
    assert "only 1024 MiB free, needs 2048" in nobody.stdout and "choice: none" in nobody.stdout


def test_operations_by_name_and_query(cloud: Cluster) -> None:
    created = cloud.cli_json("virt", "init", "app1", "2", "256", "--enable-vnc", "--host", "hv2")
    assert created["host"] == "hv2"
    assert cloud.cli("virt", "pause", "app1").stdout.strip() == "app1 on hv2: paused"
    assert cloud.cli("virt", "resume", "app1").stdout.strip() == "app1 on hv2: running"
    wait_until(lambda: cloud.cli_json("virt", "list")["hv2"].get("app1") == "running")
    query = cloud.cli_json("virt", "query", "app1")
    vm = query["hv2"]["vm_info"]["app1"]
    assert vm["cpu"] == 2 and vm["memory_mib"] == 256 and vm["graphics"]["type"] == "vnc"
    assert "password" not in vm["graphics"]
    assert vm["disks"]["vda"]["format"] == "qcow2"
    human = cloud.cli("virt", "query").stdout
    assert "vm_info:" in human and "graphics:" in human and "vnc - hv2:" in human and "file format:" in human
    vnc = cloud.cli("virt", "vnc", "app1").stdout
    assert vnc.startswith("vnc - hv2:") and "password " in vnc and "password none" not in vnc
    cloud.cli("virt", "stop", "app1")
    cloud.cli("virt", "purge", "app1")
    wait_until(lambda: "app1" not in cloud.cli_json("virt", "list")["hv2"])


def test_clear_errors_and_nothing_half_created(cloud: Cluster) -> None:
    cloud.cli_json("virt", "init", "dup", "1", "128")
    conflict = cloud.cli("virt", "init", "dup", "1", "128", check=False)
    assert conflict.returncode == 1 and "a VM named 'dup' already exists on" in conflict.stderr
    unknown = cloud.cli("virt", "start", "ghost", check=False)
    assert unknown.returncode == 1 and "no VM named 'ghost' on any hypervisor" in unknown.stderr
    failed = cloud.cli("virt", "init", "broken", "1", "128", "/no/such/image.qcow2", "--host", "hv1", check=False)
    assert failed.returncode == 1 and "virt.init broken on hv1 failed: InvalidSpec" in failed.stderr
    assert "broken" not in cloud.cli_json("virt", "list")["hv1"]
    holder = cloud.cli_json("virt", "init", "lonely", "1", "128", "--host", "hv3")["host"]
    cloud.agents[holder].stop()
    wait_until(lambda: not cloud.cli_json("virt", "host-info")[holder]["up"], timeout=15)
    offline = cloud.cli("virt", "pause", "lonely", check=False)
    assert offline.returncode == 1 and f"hypervisor {holder} holding lonely is unreachable: offline since" in \
        offline.stderr


def test_concurrent_inits_never_overcommit_a_host(cluster: Cluster, tmp_path: Any) -> None:
    cluster.start_agents("solo", virt={"vm_dir": str(tmp_path / "solo")})
    wait_until(lambda: "solo" in cluster.cli_json("virt", "host-info"))
    # 1024 MiB free: two 700 MiB VMs cannot both fit.
    procs = [subprocess.Popen([str(BIN / "saltmarsh"), "-c", str(cluster.master_dir), "virt", "init", name, "1",
                               "700", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("c1", "c2")]
    results = [(p.wait(timeout=60), p.communicate()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, (_, err) in results if code == 1)
    assert "no hypervisor can hold" in loser and "only 324 MiB free" in loser


def test_seeded_vm_carries_its_agent_config_and_a_working_token(cloud: Cluster, tmp_path: Any) -> None:
    from saltmarsh.agent.virt.seed import read_seed_iso

    created = cloud.cli_json("virt", "init", "seedy", "1", "128", "--seed", "--no-wait", "--host", "hv1",
                             "--master-address", "192.0.2.10")
    assert created["seed"] == {"master_address": "192.0.2.10"}
    cdrom = [d for d in created["vm"]["disks"].values() if d["device"] == "cdrom"]
    assert len(cdrom) == 1 and cdrom[0]["file"].endswith("seedy/seed.iso")
    files = read_seed_iso(Path(cdrom[0]["file"]))
    assert files["user-data"].startswith("#cloud-config\n") and "instance-id: seedy" in files["meta-data"]
    document = yaml.safe_load(files["user-data"])
    written = document["write_files"][0]
    # The shipped unit runs the agent as saltmarsh: it must read its config, and nobody else may.
    assert written["path"] == "/etc/saltmarsh/agent.yaml"
    assert (written["owner"], written["permissions"]) == ("root:saltmarsh", "0640")
    agent_yaml = yaml.safe_load(written["content"])
    assert agent_yaml["id"] == "seedy" and agent_yaml["request_port"] == cloud.request_port
    assert agent_yaml["master"] == "192.0.2.10"  # the address the guest was told, not the hypervisor's
    assert "private" not in files["user-data"].lower()  # nothing secret but the one-time token
    # The VM's own agent (started here as a process with that config, so on loopback) joins without
    # `key accept`.
    cloud.start_agent("seedy", **{k: v for k, v in agent_yaml.items() if k != "id"} | {"master": "127.0.0.1"})
    cloud.wait_answering("seedy")
    assert "seedy" in cloud.cli_json("key", "list")["accepted"]
