"""A seeded Debian guest on the default NIC (virtio, bridged to br0) joins over a real bridge.

The bridge, its DHCP (dnsmasq), virtlogd + libvirtd, the master (bound to br0's address) and the
hypervisor agent all run inside a network namespace the test makes (tests/netns_bridge.py), so the
guest's tap lands on that br0, the guest gets its address from that dnsmasq, and every address
lives in the namespace: no traffic leaves it. ``virt init --seed`` is given no master address: the
seed takes the master's ``interface``, br0's address. The guest boots under TCG
(``virt.domain_type: qemu``: this machine's KVM cannot run a guest kernel).

Asserted: the NIC is virtio on br0 and got a lease from the namespace's dnsmasq, cloud-init ran
(its final message on the console, the host name it set), the agent joined with its one-time token
(nobody accepted its key), ``run g1 test.ping`` is true, ``host.info`` inside reports the image's
kernel (not the host's), and the inventory names the hypervisor holding g1.
"""

from __future__ import annotations

import contextlib
import platform
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..cluster import wait_until
from ..netns_bridge import NetnsBridge, NetnsCluster, NetnsLibvirtd
from ..realvirt import TEST_PREFIX, RealLibvirtd, make_image_dir, remove_image_dir
from ..twohosts import OtherLibvirtdRunning, plain_libvirtd_paused
from .guest_image import IMAGE, image_kernel

pytestmark = pytest.mark.integration

HYPERVISOR = "kvm1"
CLOUD_FINAL_TIMEOUT = 180.0  # after the join; cloud-init final ended 66-89 s after boot in the TCG probe


@dataclass(frozen=True)
class OnTheBridge:
    """What the test drives: the namespace, its libvirtd, and a master with one hypervisor agent in it."""

    bridge: NetnsBridge
    libvirtd: NetnsLibvirtd
    cluster: NetnsCluster


@contextlib.contextmanager
def libvirtd_inside(bridge: NetnsBridge) -> Iterator[NetnsLibvirtd]:
    """The system libvirtd inside the namespace, the tests' plain one paused meanwhile; skips beside a foreign one."""
    reason = RealLibvirtd.skip_reason()
    if reason:
        pytest.skip(reason)
    with plain_libvirtd_paused():
        daemon = NetnsLibvirtd(bridge)
        try:
            daemon.start()  # LibvirtdError here is a test error, not a skip
        except OtherLibvirtdRunning as e:
            pytest.skip(str(e))
        try:
            yield daemon
        finally:
            daemon.stop()


@contextlib.contextmanager
def hypervisor_on_a_bridge(tmp_path: Path, image_roots: Path) -> Iterator[OnTheBridge]:
    """Namespace, libvirtd, master and agent, stopped in the reverse order (the guest with its libvirtd)."""
    images = make_image_dir()
    try:
        with NetnsBridge(tmp_path / "netns") as bridge, libvirtd_inside(bridge) as libvirtd:
            cluster = NetnsCluster(tmp_path / "cluster", bridge, file_roots=[str(image_roots)])
            cluster.start_master()
            try:
                # No nic_profiles: the built-in default, one virtio NIC bridged to br0.
                cluster.start_agents(HYPERVISOR, libvirt_uri=libvirtd.uri,
                                     virt={"vm_dir": str(images / "vms"), "images_dir": str(images / "cache"),
                                           "domain_type": "qemu"})
                wait_until(lambda: cluster.cli_json("virt", "host-info").get(HYPERVISOR, {}).get("libvirt"),
                           what="the real hypervisor in the inventory")
                yield OnTheBridge(bridge, libvirtd, cluster)
            finally:
                cluster.stop()
    finally:
        remove_image_dir(images)


def guest_nic(on: OnTheBridge, vm: str) -> dict[str, str]:
    """The guest's one NIC as libvirt runs it: type, bridge, model and MAC address."""
    with on.libvirtd.connection() as conn:
        nics = ET.fromstring(conn.lookupByName(vm).XMLDesc(0)).findall("devices/interface")
    assert len(nics) == 1, [ET.tostring(n) for n in nics]
    nic = nics[0]
    return {"type": nic.get("type", ""), "bridge": _attr(nic, "source", "bridge"),
            "model": _attr(nic, "model", "type"), "mac": _attr(nic, "mac", "address")}


def _attr(element: ET.Element, child: str, name: str) -> str:
    found = element.find(child)
    return found.get(name, "") if found is not None else ""


def console(on: OnTheBridge, vm: str, lines: int = 400) -> str:
    """The tail of the guest's serial console, as ``virt console-log`` shows it."""
    shown = on.cluster.cli("virt", "console-log", vm, "--lines", str(lines), check=False)
    return shown.stdout + shown.stderr


@pytest.mark.timeout(1500)
def test_a_seeded_guest_on_the_default_nic_joins_over_a_real_bridge(guest_image: Path, tmp_path: Path) -> None:
    vm = f"{TEST_PREFIX}g1"
    with hypervisor_on_a_bridge(tmp_path, guest_image) as on:
        cluster, bridge = on.cluster, on.bridge
        started = time.monotonic()
        init = cluster.cli("virt", "init", vm, "2", "768", f"master://{IMAGE}.qcow2", "--enable-qcow", "--seed",
                           "--join-timeout", "600", "--timeout", "300", check=False, timeout=1000)
        joined_after = time.monotonic() - started
        assert init.returncode == 0, f"{init.stdout}{init.stderr}\n--- console ---\n{console(on, vm, 80)}"
        print(f"virt init -> guest agent joined over br0: {joined_after:.0f} s (TCG)\n{init.stdout}")
        assert f"seeded: its agent joins the master at {bridge.address}" in init.stdout
        assert re.search(rf"^{vm}: its agent joined [0-9.]+ s after the VM was created$", init.stdout, re.M)

        # The default NIC: virtio on the namespace's br0, addressed by its dnsmasq.
        nic = guest_nic(on, vm)
        assert nic | {"mac": ""} == {"type": "bridge", "bridge": "br0", "model": "virtio", "mac": ""}, nic
        assert len(bridge.ports()) == 1, bridge.ports()
        leases = [lease for lease in bridge.leases() if lease["mac"] == nic["mac"]]
        assert leases, f"no DHCP lease for {nic['mac']}: {bridge.leases()}\n{bridge.log()[-2000:]}"
        print(f"guest {nic['mac']} got {leases[0]['ip']} from dnsmasq on br0")

        # cloud-init ran from the seed: its final message, and the host name it set (below). The final stage
        # runs after the agent was started (runcmd), so the join may come first: wait for the message a while.
        finished = wait_until(lambda: re.search(r"Cloud-init v\. \S+ finished.*", console(on, vm)),
                              timeout=CLOUD_FINAL_TIMEOUT, interval=2, what="cloud-init's final message")
        print(f"console: {finished.group(0)}")
        # The key was accepted by the join token: the test never ran `key accept` for it.
        assert vm in cluster.cli_json("key", "list")["accepted"]
        assert f"agent {vm} joined with a one-time token" in cluster.master.log()

        assert cluster.cli_json("run", vm, "test.ping") == {vm: True}
        inside = cluster.cli_json("run", vm, "host.info")[vm]
        assert inside["id"] == vm and inside["hostname"] == vm
        assert inside["kernel"] == image_kernel(guest_image) != platform.release(), inside["kernel"]
        assert "Debian GNU/Linux 12" in inside["os"] and inside["cpus"] == 2
        query = cluster.cli_json("virt", "query", vm)
        assert list(query) == [HYPERVISOR] and query[HYPERVISOR]["vm_info"][vm]["agent"] == {"id": vm, "up": True}
        assert vm not in cluster.cli_json("virt", "host-info")  # a guest, not a hypervisor
        cluster.cli("virt", "purge", vm, "--timeout", "120")
        assert not bridge.ports(), bridge.ports()
