"""``host setup`` makes a fresh Debian host a hypervisor: libvirtd running and ``virsh -c qemu:///system`` answering.

The container (tests/container.py) has apt on a local repository holding the seed's packages
(libvirt-daemon-system, libvirt-clients, qemu-system-x86, qemu-utils) and everything they need
beyond the base (resolved by this host's apt against the base's own dpkg status), so the
install is the real one. No KVM is needed: libvirtd with the QEMU driver answers without it.
The agent gets its libvirt TLS certificates from the master's CA (issue 5) into its own state
directory, and the ``libvirt_tls`` state puts them where libvirtd reads them and has it listen
on 16514: ``virsh -c qemu+tls://localhost/system`` then answers with those certificates.
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

NAME = "sm-virt1"
SEED_PACKAGES = ["libvirt-daemon-system", "libvirt-clients", "qemu-system-x86", "qemu-utils"]
# The built-in default profile, less its bridge (this container's network is a loopback).
PROFILE: dict[str, Any] = {"bridge": None}
TLS_PROFILE: dict[str, Any] = {**PROFILE, "states": [{"kind": "libvirt_tls", "name": "libvirt-tls"}]}
AGENT_PKI = "/var/lib/saltmarsh/agent/libvirt-pki"


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> harness.Parts:
    return module_parts(tmp_path_factory, "virt-parts", SEED_PACKAGES, dependencies=True)


@pytest.fixture
def host(parts: harness.Parts, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Cluster,
                                                                                                 harness.Container]]:
    libvirt_uri = getattr(request, "param", "test:///default")
    cluster = Cluster(tmp_path / "cluster", host={"profiles": {"hv": PROFILE, "tls": TLS_PROFILE}},
                      pki={"allowed_names": {NAME: ["localhost"]}})
    agent = {"id": NAME, "master": "127.0.0.1", "publish_port": cluster.publish_port,
             "request_port": cluster.request_port, "libvirt_uri": libvirt_uri, "auth_retry_seconds": 0.5,
             "libvirt_tls": True, "pki_root": AGENT_PKI, "tls_names": ["localhost"]}
    files = {"/etc/saltmarsh/agent.yaml": harness.yaml_file(agent), "/etc/hostname": f"{NAME}\n",
             "/etc/hosts": "127.0.0.1 localhost\n"}
    with booted(cluster, parts, tmp_path / "box", NAME, files, shipped_unit=True) as box:
        yield cluster, box


def setup(cluster: Cluster, *words: str, profile: str = "hv") -> tuple[int, dict[str, Any]]:
    result = cluster.cli("host", "setup", NAME, "--profile", profile, *words, "--json", check=False, timeout=1500)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)["hosts"][NAME]


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("host", ["qemu:///system"], indirect=True)
def test_a_fresh_host_ends_with_libvirtd_answering_and_a_second_run_changes_nothing(
        host: tuple[Cluster, harness.Container]) -> None:
    cluster, box = host
    assert box.exec("sh", "-c", "command -v virsh", check=False).returncode != 0
    before = cluster.cli("run", NAME, "virt.list_domains", "--json", check=False)
    assert before.returncode != 0, before.stdout  # no libvirt yet: the agent says so
    started = time.monotonic()
    code, outcome = setup(cluster)
    took = time.monotonic() - started
    statuses = {r["name"]: r["status"] for r in outcome["results"]}
    assert code == 0, outcome
    # The service watches the packages: they changed, so libvirtd is (re)started onto them.
    assert statuses == dict.fromkeys(["pkg-debian", "group-libvirt-saltmarsh", "sysctl-net.ipv4.ip_forward",
                                      "service-libvirtd.service"], "changed"), outcome
    version = box.exec("virsh", "-c", "qemu:///system", "version", timeout=60)
    assert "Running hypervisor: QEMU" in version.stdout, version.stdout
    assert box.exec("systemctl", "is-active", "libvirtd.service").stdout.strip() == "active"
    # The agent's user got libvirt's group: the agent restarted by itself to take it up, and reaches
    # qemu:///system through libvirtd's socket as that user.
    assert "libvirt" in outcome["agent_restart"] and outcome["agent_back_seconds"] is not None, outcome
    def journal() -> str:
        return box.exec("journalctl", "-u", "saltmarsh-agent", "--no-pager", "-o", "cat").stdout

    try:
        wait_until(lambda: cluster.cli("run", NAME, "virt.list_domains", "--json", check=False).returncode == 0,
                   timeout=60, what="the restarted agent to reach qemu:///system")
    except AssertionError as exc:
        last = cluster.cli("run", NAME, "virt.list_domains", "--json", check=False)
        raise AssertionError(f"{last.stdout}{last.stderr}\n{journal()[-6000:]}") from exc
    assert json.loads(cluster.cli("run", NAME, "virt.list_domains", "--json").stdout) == {NAME: []}
    journal_text = journal()
    assert "exit status 75" in journal_text and journal_text.count("connecting to") >= 2, journal_text[-3000:]
    code, again = setup(cluster)
    assert code == 0 and {r["status"] for r in again["results"]} == {"unchanged"}, again
    print(f"libvirt and QEMU installed and libvirtd answering: {took:.0f} s")


@pytest.mark.timeout(1800)
def test_libvirt_tls_puts_the_agents_certificates_in_place_and_libvirtd_answers_over_tls(
        host: tuple[Cluster, harness.Container]) -> None:
    cluster, box = host
    wait_until(lambda: box.exec("test", "-s", f"{AGENT_PKI}/libvirt/private/serverkey.pem", check=False).returncode
               == 0, timeout=60, what="the agent to get its certificates from the master")
    assert setup(cluster)[0] == 0  # libvirt installed first
    code, dry = setup(cluster, "--dry-run", profile="tls")
    tls = {r["name"]: r for r in dry["results"]}["libvirt-tls"]
    assert code == 0 and tls["status"] == "would_change"
    assert set(tls["changes"]) == {"CA/cacert.pem", "CA/cacrl.pem", "libvirt/servercert.pem",
                                   "libvirt/private/serverkey.pem", "libvirt/clientcert.pem",
                                   "libvirt/private/clientkey.pem", "socket", "listening"}
    code, applied = setup(cluster, profile="tls")
    failed = {r["name"]: r["reason"] for r in applied["results"] if r["status"] == "failed"}
    assert code == 0 and {r["name"]: r["status"] for r in applied["results"]}["libvirt-tls"] == "changed", failed
    assert box.exec("stat", "-c", "%a %U", "/etc/pki/libvirt/private/serverkey.pem").stdout.split() == ["600", "root"]
    version = box.exec("virsh", "-c", "qemu+tls://localhost/system", "version", timeout=60)
    assert "Running hypervisor: QEMU" in version.stdout, version.stdout + version.stderr
    code, again = setup(cluster, profile="tls")
    changed = {r["name"]: r["changes"] for r in again["results"] if r["status"] != "unchanged"}
    assert code == 0 and changed == {}, changed
