"""``saltmarsh host setup`` on a real Debian host: a booted systemd container (tests/container.py).

Inside: Debian's systemd as PID 1, the agent under its own sandboxed unit as user saltmarsh,
the setup helper under its unit as root, apt with a local repository of real .debs. The
test's master runs in the container's network namespace on 127.0.0.1; the CLI talks to it
over its control socket. Asserted, with the real apt, dpkg, systemctl, gpasswd and /proc/sys:

* a dry run on the fresh host lists every state as ``would change`` and changes nothing;
* ``host setup`` then changes each state (package installed, file written, sysctl set and
  persisted, group member added, service enabled and started) and says so, streaming progress;
* a second run and a dry run report zero changes;
* after two manual changes, a dry run lists exactly those two differences;
* a profile with a package the repository does not have fails that state with apt's reason,
  the service watching it fails with it (not started), every other state still changes, and the
  command exits 1;
* the agent is not root, the helper is, and the helper refuses any uid but the agent's, and the
  agent's own uid too when what it sends is not a job the master signed.
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
from ..container_host import booted, module_parts

pytestmark = pytest.mark.integration

NAME = "sm-setup1"
UNIT_FILE = "/etc/systemd/system/saltmarsh-lab.service"
LAB_UNIT = """\
[Unit]
Description=a service the lab profile runs (saltmarsh host setup test)

[Service]
ExecStart=/bin/sleep infinity

[Install]
WantedBy=multi-user.target
"""
LAB_PROFILE: dict[str, Any] = {
    "packages": {"debian": ["hello", "tree"], "redhat": ["hello", "tree"]},
    "groups": {"adm": ["saltmarsh"]},
    # Per network namespace: only the test's namespace is touched. The kernel prints the range with a tab.
    "sysctls": {"net.ipv4.ip_forward": "1", "net.ipv4.ping_group_range": "0 2147483647"},
    "states": [
        {"kind": "file", "name": "motd", "path": "/etc/motd", "content": "a saltmarsh hypervisor\n", "mode": 0o644},
        {"kind": "file", "name": "lab-unit", "path": UNIT_FILE, "content": LAB_UNIT},
    ],
    "services": ["saltmarsh-lab.service"],
    "bridge": None,  # tests/integration/test_bridge_container.py gives its container a device to bridge
}
BROKEN_PROFILE: dict[str, Any] = {
    **LAB_PROFILE,
    "states": [*LAB_PROFILE["states"],
               {"kind": "pkg", "name": "pkg-missing", "packages": ["saltmarsh-no-such-package"],
                "os_family": "debian"}],
}
STATES = ["pkg-debian", "group-adm-saltmarsh", "sysctl-net.ipv4.ip_forward", "sysctl-net.ipv4.ping_group_range",
          "motd", "lab-unit", "service-saltmarsh-lab.service"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> harness.Parts:
    return module_parts(tmp_path_factory, "container-parts", ["hello", "tree"])


@pytest.fixture
def host(parts: harness.Parts, tmp_path: Path) -> Iterator[tuple[Cluster, harness.Container]]:
    """A master in the container's namespace, the container booted, its agent accepted."""
    cluster = Cluster(tmp_path / "cluster", host={"profiles": {"lab": LAB_PROFILE, "broken": BROKEN_PROFILE}})
    agent = {"id": NAME, "master": "127.0.0.1", "publish_port": cluster.publish_port,
             "request_port": cluster.request_port, "libvirt_uri": "test:///default", "auth_retry_seconds": 0.5,
             "log_level": "debug"}
    files = {"/etc/saltmarsh/agent.yaml": harness.yaml_file(agent),
             "/etc/saltmarsh/setup-helper.yaml": harness.yaml_file({"log_level": "debug"}),
             "/etc/hostname": f"{NAME}\n"}
    # The unit as shipped: this host has no libvirt group, and the agent must start all the same.
    with booted(cluster, parts, tmp_path / "box", NAME, files, shipped_unit=True) as box:
        yield cluster, box


def setup(cluster: Cluster, *words: str) -> tuple[int, dict[str, Any], str]:
    result = cluster.cli("host", "setup", NAME, *words, "--json", check=False, timeout=600)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)["hosts"][NAME], result.stderr


def statuses(outcome: dict[str, Any]) -> dict[str, str]:
    return {r["name"]: r["status"] for r in outcome["results"]}


def facts(box: harness.Container) -> dict[str, str]:
    """What the states are about, read inside the container with its own tools."""
    def out(*argv: str) -> str:
        return box.exec(*argv, check=False).stdout.strip()
    return {"hello": out("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "hello"),
            "motd": out("cat", "/etc/motd"), "forward": out("cat", "/proc/sys/net/ipv4/ip_forward"),
            "persisted": out("cat", "/etc/sysctl.d/60-saltmarsh-net.ipv4.ip_forward.conf"),
            "adm": out("getent", "group", "adm"), "active": out("systemctl", "is-active", "saltmarsh-lab.service"),
            "enabled": out("systemctl", "is-enabled", "saltmarsh-lab.service")}


@pytest.mark.timeout(1500)
def test_host_setup_changes_a_fresh_host_then_finds_nothing_to_change(host: tuple[Cluster, harness.Container]) -> None:
    cluster, box = host
    before = facts(box)
    assert before["hello"] != "ii" and before["forward"] == "0" and "saltmarsh" not in before["adm"]

    code, dry, _ = setup(cluster, "--profile", "lab", "--dry-run")
    assert code == 0 and dry["os_family"] == "debian"
    assert statuses(dry) == dict.fromkeys(STATES, "would_change")
    assert facts(box) == before, "a dry run changed the host"

    started = time.monotonic()
    human = cluster.cli("host", "setup", NAME, "--profile", "lab", check=False, timeout=600)
    first_run = time.monotonic() - started
    assert human.returncode == 0, human.stdout + human.stderr
    for state in STATES:
        assert f"{NAME}: {state} changed" in human.stderr  # progress, streamed from the host's events
        assert f"changed       {state}" in human.stdout
    assert "hello: absent -> installed" in human.stdout and "value: 0 -> 1" in human.stdout
    after = facts(box)
    assert after["hello"] == "ii" and after["motd"] == "a saltmarsh hypervisor"
    assert after["forward"] == "1" and after["persisted"] == "net.ipv4.ip_forward = 1"
    assert "saltmarsh" in after["adm"].split(":")[3].split(",")
    assert (after["active"], after["enabled"]) == ("active", "enabled")

    started = time.monotonic()
    code, again, _ = setup(cluster, "--profile", "lab")
    second_run = time.monotonic() - started
    assert code == 0 and statuses(again) == dict.fromkeys(STATES, "unchanged")
    code, dry, _ = setup(cluster, "--profile", "lab", "--dry-run")
    assert code == 0 and statuses(dry) == dict.fromkeys(STATES, "unchanged")
    assert all(r["changes"] == {} for r in dry["results"])
    print(f"host setup on a fresh container: {first_run:.1f} s; second run: {second_run:.1f} s")

    # Two changes by hand, neither watched by the service: the dry run lists exactly them.
    box.exec("gpasswd", "-d", "saltmarsh", "adm")
    box.exec("sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward")
    code, dry, _ = setup(cluster, "--profile", "lab", "--dry-run")
    assert code == 0
    changed = {r["name"]: r["changes"] for r in dry["results"] if r["status"] != "unchanged"}
    assert changed == {"group-adm-saltmarsh": {"member": ["no", "yes"]},
                       "sysctl-net.ipv4.ip_forward": {"value": ["0", "1"]}}
    assert facts(box)["forward"] == "0"


@pytest.mark.timeout(1500)
def test_a_failing_state_fails_with_its_reason_and_the_others_still_report(
        host: tuple[Cluster, harness.Container]) -> None:
    cluster, box = host
    code, outcome, _ = setup(cluster, "--profile", "broken")
    assert code == 1
    results = {r["name"]: r for r in outcome["results"]}
    assert set(results) == {*STATES, "pkg-missing"}
    assert results["pkg-missing"]["status"] == "failed"
    assert "Unable to locate package saltmarsh-no-such-package" in results["pkg-missing"]["reason"]
    # The service watches every package and extra state (master/hosts/profile.py): it is not started onto a
    # host whose setup failed under it; every state it does not depend on still ran and changed.
    service = results.pop("service-saltmarsh-lab.service")
    assert (service["status"], service["reason"]) == ("failed", "watched state pkg-missing failed")
    assert {name: r["status"] for name, r in results.items() if name != "pkg-missing"} == dict.fromkeys(
        STATES[:-1], "changed")
    assert box.exec("systemctl", "is-active", "saltmarsh-lab.service", check=False).stdout.strip() == "inactive"
    human = cluster.cli("host", "setup", NAME, "--profile", "broken", check=False, timeout=600)
    assert human.returncode == 1
    assert "failed        pkg-missing: " in human.stdout and "Unable to locate package" in human.stdout


@pytest.mark.timeout(900)
def test_the_agent_is_not_root_and_the_helper_serves_only_the_agent(host: tuple[Cluster, harness.Container]) -> None:
    _cluster, box = host
    def user_of(unit: str) -> str:
        pid = box.exec("systemctl", "show", "-p", "MainPID", "--value", unit).stdout.strip()
        return box.exec("ps", "-o", "user=", "-p", pid).stdout.strip()
    users = {unit: user_of(unit) for unit in ("saltmarsh-agent.service", "saltmarsh-setup-helper.service")}
    assert users == {"saltmarsh-agent.service": "saltmarsh", "saltmarsh-setup-helper.service": "root"}
    # The shipped unit, no drop-in, on a host without a libvirt group (no 216/GROUP).
    assert box.exec("getent", "group", "libvirt", check=False).returncode == 2
    assert box.exec("systemctl", "show", "-p", "DropInPaths", "--value", "saltmarsh-agent.service").stdout.strip() == ""
    assert box.exec("stat", "-c", "%a %U:%G", "/run/saltmarsh-setup").stdout.split() == ["750", "root:saltmarsh"]
    assert box.exec("stat", "-c", "%a", "/run/saltmarsh-setup/setup.sock").stdout.strip() == "660"
    # A user in the agent's group, but not the agent, is refused by the helper on its peer credentials.
    box.exec("useradd", "--system", "--gid", "saltmarsh", "intruder")
    probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect('/run/saltmarsh-setup/setup.sock'); "
             "s.sendall(b'\\x00\\x00\\x00\\x01\\x90'); sys.stdout.write(repr(s.recv(4096)))")
    answer = box.exec("setpriv", "--reuid=intruder", "--regid=saltmarsh", "--clear-groups", "python3", "-c", probe)
    assert "refused: uid" in answer.stdout
    wait_until(lambda: "DENIED uid" in box.exec("journalctl", "-u", "saltmarsh-setup-helper", "--no-pager").stdout,
               what="the helper to log the refusal")
    # The agent's own user, with states of its own making (no job the master signed): refused too.
    own = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect('/run/saltmarsh-setup/setup.sock'); "
           "body=bytes([0x81,0xa6])+b'states'+bytes([0x90]); s.sendall(len(body).to_bytes(4,'big')+body); "
           "sys.stdout.write(repr(s.recv(4096)))")
    answer = box.exec("setpriv", "--reuid=saltmarsh", "--regid=saltmarsh", "--clear-groups", "python3", "-c", own)
    assert "refused: " in answer.stdout
    wait_until(lambda: "DENIED pid" in box.exec("journalctl", "-u", "saltmarsh-setup-helper", "--no-pager").stdout,
               what="the helper to log the refusal of the agent's own request")
