"""The ``bridge`` state on a real Debian host (a booted systemd container, tests/container.py), and its rollback.

The master runs in a network namespace of its own, joined to the container's by a veth pair
(tests/container.py ``Uplink``): the container's end is ``eth0``, given 10.77.0.2/24 by the
container's own systemd-networkd, the master listens on 10.77.0.1. The agent thus reaches the
master through the very device the bridge takes over, with the real kernel, iproute2 and
networkd inside the container. Asserted:

* a dry run lists exactly the bridge's differences and changes nothing;
* applying it makes br0 with eth0 as its port and 10.77.0.2 on it, written as networkd files,
  the agent still connected (the change was guarded and confirmed); a second run and a dry run
  find nothing to change;
* a bridge whose new address cannot reach the master is undone by the helper within its timer
  (``rolled back``, with the reason and its event), and the agent answers again;
* a bridge over a device that does not exist fails with the reason and changes nothing else;
* on a host whose network is ifupdown's (installed from the local repository, networkd stopped),
  the bridge is written into /etc/network/interfaces, applied with ifdown/ifup, and a second run
  changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .. import container as harness
from ..cluster import Cluster, wait_until
from ..container_host import module_parts, uplinked

pytestmark = pytest.mark.integration

NAME = "sm-bridge1"
AGENT_CIDR = "10.77.0.2/24"
MASTER_CIDR = "10.77.0.1/24"
ROLLBACK = 6.0
NOTHING: dict[str, Any] = {"packages": {"debian": [], "redhat": []}, "groups": {}, "sysctls": {}, "services": []}
PROFILES: dict[str, Any] = {
    "good": {**NOTHING, "bridge": {"device": "eth0", "rollback_seconds": 30}},
    # 10.99.0.0/24 has no route to 10.77.0.1: the agent is cut off once the change is made.
    "cut": {**NOTHING, "bridge": {"device": "eth0", "addresses": ["10.99.0.2/24"], "rollback_seconds": ROLLBACK}},
    "missing": {**NOTHING, "bridge": {"device": "eth9"},
                "states": [{"kind": "file", "name": "motd", "path": "/etc/motd", "content": "bridged\n"}]},
}
OURS = ["/etc/systemd/network/00-saltmarsh-br0.netdev", "/etc/systemd/network/00-saltmarsh-br0.network",
        "/etc/systemd/network/00-saltmarsh-eth0.network"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> harness.Parts:
    # ifupdown (and adduser, its one dependency the base lacks) for the ifupdown host.
    return module_parts(tmp_path_factory, "container-parts", ["hello", "tree", "ifupdown", "adduser"])


@pytest.fixture
def host(parts: harness.Parts, tmp_path: Path) -> Iterator[tuple[Cluster, harness.Container]]:
    """The master in its own namespace on 10.77.0.1, the container on eth0 10.77.0.2 (networkd), accepted."""
    master_ip = MASTER_CIDR.split("/")[0]
    cluster = Cluster(tmp_path / "cluster", interface=master_ip, host={"profiles": PROFILES})
    agent = {"id": NAME, "master": master_ip, "publish_port": cluster.publish_port,
             "request_port": cluster.request_port, "libvirt_uri": "test:///default", "auth_retry_seconds": 0.5,
             "request_timeout_seconds": 2.0, "log_level": "debug"}
    files = {"/etc/saltmarsh/agent.yaml": harness.yaml_file(agent),
             "/etc/saltmarsh/setup-helper.yaml": harness.yaml_file({"log_level": "debug"}),
             "/etc/hostname": f"{NAME}\n", **harness.networkd_file("eth0", AGENT_CIDR)}
    with uplinked(cluster, parts, tmp_path / "box", NAME, files, MASTER_CIDR) as box:
        wait_until(lambda: AGENT_CIDR in addresses(box, "eth0"), timeout=30, what="networkd to address eth0")
        cluster.accept(NAME)
        yield cluster, box


def addresses(box: harness.Container, device: str) -> list[str]:
    """The global addresses on ``device`` inside the container, [] if it does not exist."""
    shown = box.exec("ip", "-j", "addr", "show", "dev", device, check=False)
    if shown.returncode != 0:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(shown.stdout) for a in link["addr_info"]
            if a.get("scope") == "global"]


def port_of(box: harness.Container, device: str) -> str:
    return str(json.loads(box.exec("ip", "-j", "link", "show", "dev", device).stdout)[0].get("master", ""))


def ours(box: harness.Container) -> list[str]:
    return [path for path in OURS if box.exec("test", "-e", path, check=False).returncode == 0]


def setup(cluster: Cluster, profile: str, *words: str) -> tuple[int, dict[str, Any]]:
    result = cluster.cli("host", "setup", NAME, "--profile", profile, *words, "--json", check=False, timeout=300)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)["hosts"][NAME]


def by_name(outcome: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in outcome["results"]}


def pings(cluster: Cluster) -> bool:
    return cluster.cli("run", NAME, "test.ping", "--timeout", "3", check=False).returncode == 0


@pytest.mark.timeout(900)
def test_a_good_bridge_keeps_the_agent_connected_and_a_second_run_changes_nothing(
        host: tuple[Cluster, harness.Container]) -> None:
    cluster, box = host
    code, dry = setup(cluster, "good", "--dry-run")
    assert code == 0
    bridge = by_name(dry)["bridge-br0"]
    assert bridge["status"] == "would_change"
    config = bridge["changes"].pop("config")
    assert config[0] == "absent" and config[1].startswith("sha256:")
    assert bridge["changes"] == {"bridge": ["absent", "present"], "port of": ["-", "br0"],
                                 "addresses": ["-", AGENT_CIDR], "device addresses": [AGENT_CIDR, "-"]}
    assert "# systemd-networkd" in bridge["detail"] and "+Bridge=br0" in bridge["detail"]
    assert addresses(box, "br0") == [] and addresses(box, "eth0") == [AGENT_CIDR] and ours(box) == []

    started = time.monotonic()
    code, applied = setup(cluster, "good")
    took = time.monotonic() - started
    result = by_name(applied)["bridge-br0"]
    assert code == 0 and result["status"] == "changed", result
    assert addresses(box, "br0") == [AGENT_CIDR] and addresses(box, "eth0") == []
    assert port_of(box, "eth0") == "br0" and ours(box) == OURS
    assert "Address=10.77.0.2/24" in box.exec("cat", OURS[1]).stdout
    assert pings(cluster)
    # The change was guarded (the route to the master went through eth0) and confirmed, not timed out.
    journal = box.exec("journalctl", "-u", "saltmarsh-setup-helper", "--no-pager").stdout
    assert "rolling back" not in journal and took < 30, took

    for words in ((), ("--dry-run",)):
        code, again = setup(cluster, "good", *words)
        assert code == 0 and by_name(again)["bridge-br0"]["status"] == "unchanged"
        assert by_name(again)["bridge-br0"]["changes"] == {}
    print(f"bridge applied and confirmed in {took:.1f} s")


@pytest.mark.timeout(900)
def test_a_bridge_that_cuts_the_agent_off_is_rolled_back_within_its_timer(
        host: tuple[Cluster, harness.Container]) -> None:
    cluster, box = host
    started = time.monotonic()
    human = cluster.cli("host", "setup", NAME, "--profile", "cut", check=False, timeout=300)
    took = time.monotonic() - started
    assert human.returncode == 1, human.stdout + human.stderr
    assert f"{NAME}: bridge-br0 rolled back" in human.stderr  # its event, streamed as it came
    assert "rolled back   bridge-br0: the agent did not reach the master at 10.77.0.1 within 6 s" in human.stdout
    # The helper waits ROLLBACK seconds, restores, and the agent then reconnects to send the return.
    assert ROLLBACK < took < ROLLBACK + 25, took
    assert addresses(box, "eth0") == [AGENT_CIDR] and addresses(box, "br0") == [] and ours(box) == []
    assert box.exec("ip", "link", "show", "dev", "br0", check=False).returncode != 0
    assert box.exec("ls", "/var/lib/saltmarsh/setup/rollback").stdout.strip() == ""
    wait_until(lambda: pings(cluster), timeout=30, what="the agent to answer again")
    print(f"cut-off bridge rolled back; host setup returned after {took:.1f} s (timer {ROLLBACK:g} s)")


@pytest.mark.timeout(900)
def test_a_bridge_over_a_missing_device_fails_and_changes_nothing_else(
        host: tuple[Cluster, harness.Container]) -> None:
    cluster, box = host
    code, outcome = setup(cluster, "missing")
    assert code == 1
    results = by_name(outcome)
    assert results["bridge-br0"]["status"] == "failed"
    assert results["bridge-br0"]["reason"] == "no device eth9 on this host: bridge br0 not made, nothing changed"
    assert results["motd"]["status"] == "changed"
    assert box.exec("ip", "link", "show", "dev", "br0", check=False).returncode != 0
    assert ours(box) == [] and addresses(box, "eth0") == [AGENT_CIDR] and pings(cluster)


INTERFACES = f"""\
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet static
    address {AGENT_CIDR}
"""


@pytest.mark.timeout(900)
def test_on_an_ifupdown_host_the_bridge_goes_into_its_interfaces_file(host: tuple[Cluster, harness.Container]) -> None:
    cluster, box = host
    box.exec("apt-get", "-q", "update", timeout=300)
    box.exec("apt-get", "-q", "-y", "--no-install-recommends", "install", "ifupdown", timeout=300)
    box.exec("systemctl", "disable", "--now", "systemd-networkd.service", "systemd-networkd.socket")
    box.exec("rm", "/etc/systemd/network/20-uplink.network")
    box.exec("sh", "-c", f"cat > /etc/network/interfaces <<'EOF'\n{INTERFACES}EOF\n")
    box.exec("ip", "addr", "flush", "dev", "eth0")
    box.exec("ifup", "eth0")
    wait_until(lambda: pings(cluster), timeout=60, what="the agent to answer over ifupdown's eth0")
    code, dry = setup(cluster, "good", "--dry-run")
    assert code == 0 and "# ifupdown" in by_name(dry)["bridge-br0"]["detail"]
    code, applied = setup(cluster, "good")
    assert code == 0 and by_name(applied)["bridge-br0"]["status"] == "changed", applied
    assert addresses(box, "br0") == [AGENT_CIDR] and addresses(box, "eth0") == [] and port_of(box, "eth0") == "br0"
    written = box.exec("cat", "/etc/network/interfaces").stdout
    assert "iface eth0 inet manual" in written and "iface br0 inet static" in written and ours(box) == []
    assert pings(cluster)
    code, again = setup(cluster, "good")
    assert code == 0 and by_name(again)["bridge-br0"]["status"] == "unchanged"
