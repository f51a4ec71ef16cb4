"""What a real guest needs of ``virt init`` (issue 11, part 2), on libvirt's test driver.

- the seed names a master address the guest can reach, refused with the reason when it cannot;
- the seed CD-ROM is on virtio-scsi (the cloud kernel has no AHCI), and the serial console is logged;
- NIC profiles of type bridge, network and user;
- ``virt console-log NAME`` shows the tail of the console, escaped.
"""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from saltmarsh.agent.virt.seed import read_seed_iso

from .cluster import BIN, Cluster, wait_until


@pytest.fixture
def lab(cluster: Cluster, tmp_path: Path) -> Cluster:
    nics = {"lab": [{"type": "user"}], "nat": [{"type": "network", "source": "default"}],
            "both": [{"type": "bridge", "source": "br0"}, {"name": "eth1", "type": "user"}]}
    cluster.start_agent("hv1", virt={"vm_dir": str(tmp_path / "vms"), "nic_profiles": nics})
    cluster.accept("hv1")
    wait_until(lambda: "hv1" in cluster.cli_json("virt", "host-info"), what="hv1 in the inventory")
    return cluster


def _xml(cluster: Cluster, name: str) -> ET.Element:
    return ET.fromstring(cluster.cli_json("run", "hv1", "virt.get_xml", name)["hv1"])


@pytest.mark.parametrize("address", ["", "0.0.0.0", "::", "127.0.0.1", "localhost", "::1"])
def test_seeding_with_an_address_no_guest_can_use_is_refused_and_leaves_nothing(lab: Cluster, address: str) -> None:
    # The cluster's master binds 127.0.0.1: its interface is no default a guest could use either.
    args = ["virt", "init", "s1", "1", "64", "--seed"] + (["--master-address", address] if address else [])
    result = lab.cli(*args, check=False)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("saltmarsh: cannot seed with master address"), line
    assert ("loopback address is the guest's own" in line) or ("any-address" in line), line
    assert "s1" not in lab.cli_json("run", "hv1", "virt.list_domains")["hv1"]
    assert "refused join token" not in lab.master.log() and "s1" not in lab.cli_json("key", "list")["accepted"]


def test_the_seed_address_comes_from_master_yaml_unless_the_request_names_one(cluster: Cluster,
                                                                             tmp_path: Path) -> None:
    cluster.master.stop()
    config = cluster.master_dir / "master.yaml"
    config.write_text(yaml.safe_dump(yaml.safe_load(config.read_text()) | {"seed": {"master_address": "192.0.2.7"}}))
    cluster.start_master()
    cluster.start_agent("hv1", virt={"vm_dir": str(tmp_path / "vms")})
    cluster.accept("hv1")
    wait_until(lambda: "hv1" in cluster.cli_json("virt", "host-info"), what="hv1 in the inventory")
    human = cluster.cli("virt", "init", "s2", "1", "64", "--seed", "--no-wait").stdout
    assert "seeded: its agent joins the master at 192.0.2.7" in human
    assert _seeded_master(cluster, "s2") == "192.0.2.7"
    cluster.cli("virt", "init", "s3", "1", "64", "--seed", "--no-wait", "--master-address", "guests.example")
    assert _seeded_master(cluster, "s3") == "guests.example"


def _seeded_master(cluster: Cluster, name: str) -> Any:
    cdrom = _xml(cluster, name).find("./devices/disk[@device='cdrom']/source")
    assert cdrom is not None
    files = read_seed_iso(Path(cdrom.get("file", "")))
    return yaml.safe_load(yaml.safe_load(files["user-data"])["write_files"][0]["content"])["master"]


def test_seed_cdrom_is_on_virtio_scsi_and_the_console_is_logged(lab: Cluster, tmp_path: Path) -> None:
    lab.cli("virt", "init", "s4", "1", "64", "--seed", "--no-wait", "--master-address", "10.0.2.2")
    devices = _xml(lab, "s4").find("./devices")
    assert devices is not None
    cdrom = devices.find("./disk[@device='cdrom']/target")
    assert cdrom is not None and cdrom.get("bus") == "scsi"
    controller = devices.find("./controller[@type='scsi'][@index='0']")
    assert controller is not None and controller.get("model") == "virtio-scsi"
    address = devices.find("./disk[@device='cdrom']/address")
    assert address is not None and address.get("controller") == "0"  # not one libvirt derives from sdz
    assert [c.get("model") for c in devices.findall("./controller[@type='scsi']")] == ["virtio-scsi"]
    log = devices.find("./serial/log")
    assert log is not None and log.get("file") == str(tmp_path / "vms" / "s4" / "console.log")


def test_nic_profiles_bridge_network_and_user(lab: Cluster) -> None:
    for name, profile in (("n1", "lab"), ("n2", "nat"), ("n3", "both"), ("n4", "default")):
        lab.cli("virt", "init", name, "1", "64", "--nic-profile", profile)
    kinds = {name: [(i.get("type"), (i.find("source").attrib if i.find("source") is not None else {}))
                    for i in _xml(lab, name).findall("./devices/interface")] for name in ("n1", "n2", "n3", "n4")}
    assert kinds == {
        "n1": [("user", {})],
        "n2": [("network", {"network": "default"})],
        "n3": [("bridge", {"bridge": "br0"}), ("user", {})],
        "n4": [("bridge", {"bridge": "br0"})],  # the default: one virtio NIC bridged to br0
    }


def test_console_log_shows_the_tail_escaped(lab: Cluster, tmp_path: Path) -> None:
    lab.cli("virt", "init", "c1", "1", "64")
    first = lab.cli("virt", "console-log", "c1").stdout
    assert "nothing written yet" in first
    # Stand in for virtlogd: write what a guest's console would hold, a hostile line included.
    log = tmp_path / "vms" / "c1" / "console.log"
    log.write_bytes(b"SeaBIOS\r\nBooting from Hard Disk...\r\n\x1b[2Jforged\nNo bootable device.\r\n")
    shown = lab.cli("virt", "console-log", "c1", "--lines", "2").stdout.splitlines()
    assert shown[1:] == ["\\x1b[2Jforged", "No bootable device."]
    as_json = lab.cli_json("virt", "console-log", "c1", "--lines", "3")
    assert as_json["lines"] == ["Booting from Hard Disk...", "\x1b[2Jforged", "No bootable device."]
    assert lab.cli("virt", "console-log", "c1", "--lines", "0", check=False).returncode == 2


def test_console_log_reads_no_file_outside_vm_dir(lab: Cluster, tmp_path: Path) -> None:
    outside = tmp_path / "secret.log"
    outside.write_text("root:x:0:0\n")
    xml = ET.Element("domain", type="test")
    ET.SubElement(xml, "name").text = "x1"
    ET.SubElement(xml, "memory", unit="MiB").text = "64"
    ET.SubElement(ET.SubElement(xml, "os"), "type").text = "hvm"
    serial = ET.SubElement(ET.SubElement(xml, "devices"), "serial", type="pty")
    ET.SubElement(serial, "log", file=str(outside))
    lab.cli("run", "hv1", "virt.define_xml", f"xml={ET.tostring(xml, encoding='unicode')}")
    wait_until(lambda: "x1" in lab.cli_json("virt", "list").get("hv1", {}), what="x1 in the inventory")
    result = lab.cli("virt", "console-log", "x1", check=False)
    assert result.returncode == 1 and "has no console log under" in result.stderr
    assert "root:x" not in result.stdout + result.stderr


def _init_in_background(cluster: Cluster, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(BIN / "saltmarsh"), "-c", str(cluster.master_dir), "virt", "init", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_virt_init_waits_for_the_guests_agent_and_the_inventory_links_them(lab: Cluster, tmp_path: Path) -> None:
    init = _init_in_background(lab, "g1", "1", "64", "--seed", "--master-address", "10.0.2.2", "--join-timeout", "60")
    try:
        seed = tmp_path / "vms" / "g1" / "seed.iso"
        wait_until(lambda: seed.exists() and seed.stat().st_size > 0, timeout=30, what="g1's seed")
        files = read_seed_iso(seed)
        config = yaml.safe_load(yaml.safe_load(files["user-data"])["write_files"][0]["content"])
        # The guest's agent, stood in for by a process on this host (so on loopback), boots "late".
        lab.start_agent("g1", **{k: v for k, v in config.items() if k != "id"} | {"master": "127.0.0.1"})
        out, err = init.communicate(timeout=90)
    finally:
        init.kill()
    assert init.returncode == 0, err
    assert "waiting up to 60 s for g1's own agent to join" in out
    assert re.search(r"^g1: its agent joined [0-9.]+ s after the VM was created$", out, re.M), out
    vm = lab.cli_json("virt", "query", "g1")["hv1"]["vm_info"]["g1"]
    assert vm["agent"] == {"id": "g1", "up": True}


def test_a_guest_whose_agent_never_joins_is_reported_with_its_console(lab: Cluster, tmp_path: Path) -> None:
    init = _init_in_background(lab, "g0", "1", "64", "--seed", "--master-address", "10.0.2.2", "--join-timeout", "4")
    try:
        disk_dir = tmp_path / "vms" / "g0"
        wait_until(lambda: (disk_dir / "seed.iso").exists(), timeout=30, what="g0's files")
        # Stand in for virtlogd and a disk that does not boot.
        (disk_dir / "console.log").write_text("SeaBIOS (version 1.16)\nBooting from Hard Disk...\n"
                                              "Boot failed: not a bootable disk\n")
        out, err = init.communicate(timeout=60)
    finally:
        init.kill()
    assert init.returncode == 1, (out, err)
    lines = err.splitlines()
    assert re.fullmatch(r"saltmarsh: g0: the VM runs but its agent has not joined after [45] s; the last lines "
                        r"of its console follow \(saltmarsh virt console-log NAME\)", lines[0]), lines
    assert lines[1:] == ["    SeaBIOS (version 1.16)", "    Booting from Hard Disk...",
                         "    Boot failed: not a bootable disk"]
    assert "g0" not in lab.cli_json("key", "list")["accepted"]
