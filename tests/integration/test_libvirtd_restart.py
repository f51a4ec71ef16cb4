"""When libvirtd goes away and comes back, the agent reconnects, re-registers for events, and resyncs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from ..cluster import Cluster, EventRecorder, wait_until
from .conftest import RealVirt

pytestmark = pytest.mark.integration


def test_agent_survives_a_libvirtd_restart(real_libvirtd: RealVirt, image_dir: Path, tmp_path: Path) -> None:
    daemon = real_libvirtd.daemon
    if daemon.started_libvirtd is None:
        pytest.skip("libvirtd was already running before the tests; not restarting someone else's daemon")
    cluster = Cluster(tmp_path / "cluster")
    cluster.start_master()
    try:
        cluster.start_agents("kvm1", libvirt_uri=real_libvirtd.uri,
                             virt={"vm_dir": str(image_dir / "vms"), "nic_profiles": {"default": []}})
        wait_until(lambda: cluster.cli_json("virt", "host-info").get("kvm1", {}).get("libvirt"))
        recorder = EventRecorder(cluster, "saltmarsh/virt/kvm1/", idle_timeout=15)
        recorder.ready("kvm1", "saltmarsh/virt/kvm1/probe")

        pid = daemon.started_libvirtd
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}/exe").exists(), timeout=20, what="libvirtd to exit")
        daemon.started_libvirtd = None
        wait_until(lambda: "libvirt connection to qemu:///system closed" in cluster.agents["kvm1"].log(),
                   timeout=20, what="the agent to notice")
        time.sleep(1)
        daemon.start()
        wait_until(lambda: "saltmarsh/virt/kvm1/inventory" in recorder.tags(), timeout=30,
                   what="a full inventory after the reconnect")
        # Events flow again on the new connection: a new VM's lifecycle reaches the bus.
        vm = f"{real_libvirtd.prefix}after"
        cluster.cli_json("virt", "init", vm, "1", "64", "--timeout", "120")
        wait_until(lambda: f"saltmarsh/virt/kvm1/domain/{vm}/started" in recorder.tags(), timeout=20)
        cluster.cli("virt", "purge", vm)
        assert "libvirt connection to qemu:///system is back" in cluster.agents["kvm1"].log()
        recorder.close()
    finally:
        cluster.stop()
