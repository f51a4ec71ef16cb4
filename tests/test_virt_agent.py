"""The agent's virt.* functions on libvirt's test:///default driver, through a real master and agent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from saltmarsh.agent.errors import InvalidSpec
from saltmarsh.agent.virt.spec import parse_spec, validate_name
from saltmarsh.protocol.redaction import REDACTED

from .cluster import Cluster, EventRecorder


@pytest.fixture
def hv(cluster: Cluster, tmp_path: Path) -> Cluster:
    cluster.start_agents("hv1", virt={"vm_dir": str(tmp_path / "vms"), "image_dirs": [str(tmp_path)]})
    return cluster


def run(cluster: Cluster, fun: str, *args: str, ok: bool = True) -> Any:
    result = cluster.cli("run", "hv1", fun, *args, "--json", check=False)
    value = json.loads(result.stdout)["hv1"]
    assert (result.returncode == 0) == ok, value
    return value


def test_inventory_of_the_test_driver(hv: Cluster) -> None:
    assert run(hv, "virt.list_domains") == ["test"]
    assert run(hv, "virt.list_active") == ["test"] and run(hv, "virt.list_inactive") == []
    assert run(hv, "virt.vm_state") == {"test": "running"}
    info = run(hv, "virt.vm_info", "test")["test"]
    assert info["cpu"] == 2 and info["memory_mib"] == 8192 and info["state"] == "running"
    assert info["nics"]["aa:bb:cc:dd:ee:ff"]["source"] == "default"
    assert info["disks"]["vda"]["file"] == "/guest/diskimage1"
    node = run(hv, "virt.node_info")
    assert node["cpus"] == 16 and node["driver"] == "TEST"
    full = run(hv, "virt.full_info")
    assert full["freecpu"] == 16 - 2 and set(full["vm_info"]) == {"test"}
    assert run(hv, "virt.get_macs", "test") == ["aa:bb:cc:dd:ee:ff"]
    assert "<name>test</name>" in run(hv, "virt.get_xml", "test")
    assert any("test" in g["domain_types"] for g in run(hv, "virt.capabilities")["guests"])


def test_init_lifecycle_and_purge(hv: Cluster, tmp_path: Path) -> None:
    info = run(hv, "virt.init", "name=web1", "cpus=2", "memory_mib=512", "enable_vnc=true")
    assert info["state"] == "running" and info["cpu"] == 2 and info["memory_mib"] == 512
    assert info["graphics"]["type"] == "vnc" and info["graphics"]["listen"] == "127.0.0.1"
    # A plain `run` shows the console password redacted; `virt vnc NAME` alone prints it (test_controller).
    assert info["graphics"]["password"] == REDACTED
    disk = info["disks"]["vda"]
    assert disk["format"] == "qcow2" and Path(disk["file"]).exists()
    assert disk["file"].startswith(str(tmp_path / "vms" / "web1"))
    assert run(hv, "virt.pause", "web1")["state"] == "paused"
    assert run(hv, "virt.resume", "web1")["state"] == "running"
    assert run(hv, "virt.reboot", "web1")["state"] == "running"
    assert run(hv, "virt.stop", "web1")["state"] == "shutoff"
    assert run(hv, "virt.setmem", "web1", "memory_mib=256")["memory_mib"] == 256
    assert run(hv, "virt.setvcpus", "web1", "cpus=1")["cpu"] == 1
    assert run(hv, "virt.set_autostart", "web1")["autostart"] is True
    assert run(hv, "virt.start", "web1")["state"] == "running"
    purged = run(hv, "virt.purge", "web1")
    assert purged["removed"] == [disk["file"]] and not Path(disk["file"]).exists()
    assert "web1" not in run(hv, "virt.list_domains")


def test_init_with_qcow_overlay_on_a_base_image(hv: Cluster, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    info = run(hv, "virt.init", "name=db1", "cpus=1", "memory_mib=256", f"image={base}", "enable_qcow=true")
    overlay = info["disks"]["vda"]["file"]
    described = json.loads(subprocess.run(["qemu-img", "info", "--output=json", overlay],
                                          capture_output=True, text=True, check=True).stdout)
    assert described["format"] == "qcow2" and described["backing-filename"] == str(base)
    assert base.exists()


def test_errors_are_structured_and_nothing_is_half_created(hv: Cluster, tmp_path: Path) -> None:
    run(hv, "virt.init", "name=vm1", "cpus=1", "memory_mib=128")
    conflict = run(hv, "virt.init", "name=vm1", "cpus=1", "memory_mib=128", ok=False)
    assert conflict["error"]["type"] == "VmConflict"
    unknown = run(hv, "virt.pause", "nosuch", ok=False)
    assert unknown["error"] == {"type": "VmNotFound", "message": "no VM named 'nosuch' on this hypervisor"}
    bad_name = run(hv, "virt.init", "name=../etc", "cpus=1", "memory_mib=128", ok=False)
    assert bad_name["error"]["type"] == "InvalidSpec"
    bad_image = run(hv, "virt.init", "name=vm2", "cpus=1", "memory_mib=128", "image=/no/such.img", ok=False)
    assert bad_image["error"]["type"] == "InvalidSpec"
    assert not (tmp_path / "vms" / "vm2").exists(), "a failed init left its directory"
    libvirt_error = run(hv, "virt.resume", "vm1", ok=False)  # not paused: libvirt refuses
    assert libvirt_error["error"]["type"] == "LibvirtFailure" and "resume vm1:" in libvirt_error["error"]["message"]
    assert "vm2" not in run(hv, "virt.list_domains")


def test_snapshots(hv: Cluster) -> None:
    run(hv, "virt.init", "name=snapvm", "cpus=1", "memory_mib=128")
    assert run(hv, "virt.snapshot", "snapvm", "snapshot_name=before")["snapshot"] == "before"
    assert [s["snapshot"] for s in run(hv, "virt.list_snapshots", "snapvm")] == ["before"]
    assert run(hv, "virt.revert_snapshot", "snapvm", "snapshot_name=before")["snapshot"] == "before"
    run(hv, "virt.delete_snapshot", "snapvm", "snapshot_name=before")
    assert run(hv, "virt.list_snapshots", "snapvm") == []


def test_networks_and_pools(hv: Cluster, tmp_path: Path) -> None:
    net = run(hv, "virt.network_define", "lab", "cidr=10.77.0.0/24")
    assert net["active"] is True
    assert run(hv, "virt.network_stop", "lab")["done"] == "stop network"
    assert run(hv, "virt.network_list")["lab"]["active"] is False
    run(hv, "virt.network_undefine", "lab")
    assert "lab" not in run(hv, "virt.network_list")
    pool = run(hv, "virt.pool_define", "images", f"path={tmp_path / 'pool'}")
    assert pool["active"] is True
    run(hv, "virt.pool_stop", "images")
    run(hv, "virt.pool_undefine", "images")
    assert "images" not in run(hv, "virt.pool_list")


def test_libvirt_lifecycle_events_and_inventory_reach_the_bus(hv: Cluster) -> None:
    recorder = EventRecorder(hv, "saltmarsh/virt/hv1/")
    recorder.ready("hv1", "saltmarsh/virt/hv1/probe")
    # Deleted, the key takes the master's inventory of hv1 with it: accepted again, the agent finds
    # its inventory's digest differs from the master's (empty) one and pushes the full inventory.
    hv.cli("key", "delete", "hv1")
    hv.accept("hv1")
    run(hv, "virt.init", "name=ev1", "cpus=1", "memory_mib=128")
    run(hv, "virt.pause", "ev1")
    run(hv, "virt.resume", "ev1")
    run(hv, "virt.purge", "ev1")
    recorder.close()
    events = [(e.tag, e.data) for e in recorder.events]
    inventory = [data for tag, data in events if tag == "saltmarsh/virt/hv1/inventory"]
    assert inventory and inventory[0]["available"] is True and "test" in inventory[0]["vm_info"]
    domain = [tag.split("/", 5)[-1] for tag, _ in events if "/domain/ev1/" in tag]
    assert domain == ["defined", "started", "suspended", "resumed", "stopped", "undefined"], domain
    started = next(data for tag, data in events if tag.endswith("/domain/ev1/started"))
    assert started["detail"] == "booted" and started["info"]["cpu"] == 1


@pytest.mark.parametrize("name", ["vm1\n", "vm1\r", "../etc", ".hidden", "-x", "a/b", "x" * 65, ""])
def test_unsafe_vm_names_are_refused(name: str) -> None:
    # msgspec's `$` accepts a trailing newline; the patterns end in \Z so that "vm1\n" is refused too.
    with pytest.raises(InvalidSpec):
        validate_name(name)
    with pytest.raises(InvalidSpec):
        parse_spec({"name": name, "cpus": 1, "memory_mib": 128})
