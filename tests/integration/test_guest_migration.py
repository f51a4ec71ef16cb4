"""A running seeded Debian guest live-migrates between two real libvirtds, and its own agent keeps answering.

Where the network is, and why: TwoHypervisors' hv-b has private mount and UTS namespaces only, so without
more both libvirtds (and their QEMUs) share the machine's network namespace, and a ``user`` NIC reaches
the same host loopback at 10.0.2.2 from either host. But QEMU's user networking (libslirp) holds the
guest's TCP connections as host sockets of the QEMU process and does not migrate them: measured here, the
guest's agent went on heartbeating after the move (the master kept it "up") yet answered no job in 90 s:
its job subscription, a SUB socket that never sends, stayed on a connection that led nowhere any more.
A bridge keeps the connections, as on real hosts: their state is in the guest's own kernel and both
hosts' taps join one L2 segment. So everything runs inside one network namespace the test makes
(tests/netns_bridge.py): ``br0`` with DHCP, both libvirtds (TLS on that namespace's 127.0.0.1 and
127.0.0.2), the master on br0's address, the hypervisor agents; the guest has the default NIC (virtio on
br0), and its agent reaches the master on br0 from either host. No traffic leaves the namespace.

Asserted: the guest's agent answers pings sent every 200 ms through the master before, during and after
``saltmarsh virt migrate``; the longest gap between answered pings is printed and bounded; the guest's
kernel reports no bug or corruption on its console; host.info inside the guest shows an uptime that went
on across the move (the guest was not restarted), and the inventory names the new host. The guest runs
under TCG (``virt.domain_type: qemu``: this machine's KVM cannot run a guest kernel) with one vCPU (see
GUEST_CPUS), which is also what the printed figures are.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ..cluster import wait_until
from ..realvirt import TEST_PREFIX
from .guest_migration_lab import (
    AFTER_TIMEOUT,
    MAX_GAP,
    PINGS_AFTER,
    Pinger,
    answers_after,
    boot_seeded_guest,
    diagnose,
    kernel_trouble,
    migrate,
    report,
    two_hosts_on_a_bridge,
    uptime,
)

pytestmark = pytest.mark.integration


@pytest.mark.timeout(1800)
def test_a_running_guest_migrates_live_and_its_agent_keeps_answering(guest_image: Path, tmp_path: Path) -> None:
    vm = f"{TEST_PREFIX}g1"
    with two_hosts_on_a_bridge(tmp_path, guest_image) as lab:
        cluster = lab.env.cluster
        print(f"virt init -> guest agent joined: {boot_seeded_guest(cluster, vm):.0f} s (TCG)")
        assert cluster.cli_json("run", vm, "test.ping") == {vm: True}
        before, read_before = uptime(cluster, vm), time.monotonic()

        with Pinger(cluster.master_dir, vm) as pinger:
            wait_until(lambda: len(pinger.answered()) >= 5, timeout=30, interval=0.1, what="pings before the move")
            result, started, ended = migrate(cluster, vm, "hvb")
            answering = answers_after(pinger, ended)
        gap, during = report(pinger, result, started, ended)
        trouble = kernel_trouble(cluster, vm)
        assert not trouble, f"the guest's kernel after the move: {trouble[:5]}\n{diagnose(lab, vm)}"
        assert answering, f"fewer than {PINGS_AFTER} pings answered in {AFTER_TIMEOUT:.0f} s after the move\n" \
                          + diagnose(lab, vm)

        assert result["source"] == "hva" and result["target"] == "hvb"
        assert set(result["confirmed"]) == {"source", "target"}
        assert during, "the guest's agent answered no ping while the migration ran"
        assert gap <= MAX_GAP, f"the guest's agent stopped answering for {gap:.1f} s"
        after, read_after = uptime(cluster, vm), time.monotonic()
        print(f"guest uptime: {before:.1f} s before, {after:.1f} s after ({read_after - read_before:.1f} s apart)")
        # A restarted guest would count from its new boot: less than it showed before the move.
        assert after - before >= 0.5 * (read_after - read_before), (before, after)
        wait_until(lambda: (vms := cluster.cli_json("virt", "list")).get("hvb", {}).get(vm) == "running"
                   and vm not in vms.get("hva", {}), what="the inventory to name hvb only")
        query = cluster.cli_json("virt", "query", vm)
        assert list(query) == ["hvb"] and query["hvb"]["vm_info"][vm]["agent"] == {"id": vm, "up": True}
        cluster.cli("virt", "purge", vm, "--timeout", "120")
