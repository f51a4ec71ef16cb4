"""The ``virt init`` row of bench/virt.py: a VM created and running on a real libvirtd + QEMU.

One master (serving a blank 64M qcow2 from its file_roots) and one agent on qemu:///system, with
its vm_dir and image cache under a directory QEMU can read (tests.realvirt.make_image_dir) and no
NIC (no bridge exists here). Each run times ``saltmarsh virt init NAME 1 128 master://blank.qcow2
--enable-qcow --enable-vnc`` until it returns, checks that libvirt itself shows the VM running,
then purges it (that time is reported too). Everything started here is stopped here.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.cluster import Cluster, wait_until
from tests.realvirt import TEST_PREFIX, RealLibvirtd, blank_qcow2, libvirtd_with_image_dir

from .virt_fixtures import Timing, cli_argv, run_timed

AGENT = "q0"
NAME_PREFIX = f"{TEST_PREFIX}bench-virt-"  # narrower than TEST_PREFIX: never touch other sessions' VMs
STARTUP_TIMEOUT = 120.0


@dataclass
class QemuResult:
    """What the real-QEMU runs measured, or why they were skipped."""

    init: Timing | None = None
    purge: Timing | None = None
    domain_type: str = ""
    skipped: str = ""


def say(text: str) -> None:
    """Progress, on stderr."""
    print(f"[bench.virt] {text}", file=sys.stderr, flush=True)


def _running_in_libvirt(daemon: RealLibvirtd, name: str) -> bool:
    """True if libvirt (not saltmarsh) shows ``name`` running."""
    import libvirt

    with daemon.connection() as conn:
        return bool(conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING)


def _init_once(cluster: Cluster, daemon: RealLibvirtd, name: str, result: QemuResult) -> None:
    """Time one init (until the CLI returns with the VM running), then time its purge."""
    argv = cli_argv(cluster.master_dir, "virt", "init", name, "1", "128", "master://blank.qcow2",
                    "--enable-qcow", "--enable-vnc")
    elapsed, done = run_timed(argv, timeout=300)
    if f"created {name} on {AGENT}: running" not in done.stdout:
        raise RuntimeError(f"virt init {name} did not report running:\n{done.stdout}")
    if not _running_in_libvirt(daemon, name):
        raise RuntimeError(f"virt init {name} reported running but libvirt does not show it running")
    assert result.init is not None and result.purge is not None
    result.init.seconds.append(elapsed)
    result.init.stdout = done.stdout
    purged, _ = run_timed(cli_argv(cluster.master_dir, "virt", "purge", name), timeout=120)
    result.purge.seconds.append(purged)


def _start_cluster(base: Path, image_dir: Path) -> Cluster:
    """A master serving blank.qcow2 and one agent on qemu:///system, in the inventory."""
    file_root = base / "file_root"
    file_root.mkdir(parents=True)
    blank_qcow2(file_root / "blank.qcow2", "64M")
    cluster = Cluster(base / "cluster", file_roots=[str(file_root)], heartbeat_seconds=10.0, log_level="info")
    cluster.start_master()
    cluster.start_agents(AGENT, libvirt_uri=RealLibvirtd.uri, log_level="info",
                         virt={"vm_dir": str(image_dir / "vms"), "images_dir": str(image_dir / "cache"),
                               "nic_profiles": {"default": []}})
    wait_until(lambda: cluster.cli_json("virt", "host-info").get(AGENT, {}).get("libvirt"),
               timeout=STARTUP_TIMEOUT, interval=0.3, what="the real hypervisor in the inventory")
    return cluster


def measure_real_qemu(base: Path, runs: int) -> QemuResult:
    """``runs`` inits on real QEMU, each purged after; skipped (with the reason) only where it cannot run."""
    reason = RealLibvirtd.skip_reason()
    if reason:
        return QemuResult(skipped=reason)
    say("real QEMU: starting (or reusing) the system libvirtd")
    with libvirtd_with_image_dir(NAME_PREFIX) as (daemon, image_dir):
        result = QemuResult(init=Timing(), purge=Timing(), domain_type=daemon.domain_type)
        cluster: Cluster | None = None
        try:
            cluster = _start_cluster(base, image_dir)
            stamp = time.strftime("%H%M%S")
            for run in range(runs):
                name = f"{NAME_PREFIX}{stamp}-{run}"
                say(f"real QEMU: virt init {name} ({run + 1}/{runs})")
                _init_once(cluster, daemon, name, result)
        except BaseException:
            if cluster is not None:
                cluster.print_log_tails()
            raise
        finally:
            if cluster is not None:
                cluster.stop()
    return result
