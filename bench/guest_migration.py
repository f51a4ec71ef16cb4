"""The guest migration benchmark: a real seeded Debian guest live-migrated back and forth between two real
libvirtds while its own agent is pinged every 200 ms, under TCG.

    flock /tmp/saltmarsh-libvirtd.lock .venv/bin/python -m bench.guest_migration [--moves 3]

As root. The lab is the one tests/integration/test_guest_migration.py runs in (guest_migration_lab.py):
one network namespace the bench makes, holding br0 with DHCP, both libvirtds (TLS, certificates from the
master's CA), the master and both hypervisor agents; the guest (1 vCPU, 768 MiB, ``virt.domain_type:
qemu``) has the default NIC on br0. The image is built from this tree first (tests/integration/
guest_image.py; the Debian base cached for a week). Then ``--moves`` migrations, hva -> hvb -> hva ...,
each with a pinger of its own started before it: ``virt migrate`` wall time (the CLI process), libvirt's
own duration and downtime, bytes sent, the longest gap between answered pings, the pings answered while
it ran. Medians (min-max) over the moves. Salt prints no figure for this: its virt.migrate runner fires
and forgets (saltstack/salt#11259). The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from tests.cluster import Cluster, wait_until
from tests.integration.guest_image import build_guest_image
from tests.integration.guest_migration_lab import (
    GUEST_CPUS,
    PING_INTERVAL,
    Move,
    Pinger,
    answers_after,
    boot_seeded_guest,
    migrate,
    move_figures,
    two_hosts_on_a_bridge,
    uptime,
)
from tests.realvirt import TEST_PREFIX

VM = f"{TEST_PREFIX}bench-gm"


def say(text: str) -> None:
    """Progress, on stderr."""
    print(f"[bench.guest_migration] {text}", file=sys.stderr, flush=True)


def spread(values: list[float]) -> str:
    """Median (min-max)."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def one_move(cluster: Cluster, vm: str, target: str) -> Move:
    """Migrate ``vm`` to ``target`` with a fresh pinger around it; its figures."""
    with Pinger(cluster.master_dir, vm) as pinger:
        wait_until(lambda: len(pinger.answered()) >= 5, timeout=60, interval=0.1, what="pings before the move")
        result, started, ended = migrate(cluster, vm, target)
        if not answers_after(pinger, ended):
            raise SystemExit(f"{vm} stopped answering after the move to {target}")
    return move_figures(pinger, result, started, ended)


def render(moves: list[Move], joined: float, uptimes: tuple[float, float], load: tuple[str, str]) -> str:
    """The table."""
    def column(values: list[float | None]) -> str:
        known = [v for v in values if v is not None]
        return spread(known) if known else "-"
    lines = [
        "saltmarsh guest migration benchmark: a real seeded guest between two real libvirtds (TLS), its agent "
        f"pinged every {PING_INTERVAL * 1000:.0f} ms",
        f"guest: Debian 12, {GUEST_CPUS} vCPU, 768 MiB, TCG (virt.domain_type: qemu; this machine's KVM cannot run "
        f"a guest kernel), default NIC on br0; load averages at start {load[0]}, end {load[1]}",
        f"virt init -> its agent joined: {joined:.0f} s; guest uptime {uptimes[0]:.0f} s before the first move, "
        f"{uptimes[1]:.0f} s after the last (never reset)",
        "",
        f"{'MEASURE (median (min-max) of ' + str(len(moves)) + ' moves)':<58}  VALUE",
        f"{'virt migrate, wall (CLI process)':<58}  {column([m.wall for m in moves])} s",
        f"{'libvirt migrate call (the agent measured)':<58}  {column([m.libvirt_seconds for m in moves])} s",
        f"{'downtime (libvirt)':<58}  {column([m.downtime_ms for m in moves])} ms",
        f"{'data sent':<58}  {column([m.data_total / 2**20 if m.data_total else None for m in moves])} MiB",
        f"{'longest gap between answered pings':<58}  {column([m.longest_gap for m in moves])} s",
        f"{'pings answered while virt migrate ran':<58}  {column([float(m.answered_during) for m in moves])}",
        f"{'first answer after virt migrate returned':<58}  {column([m.first_answer_after for m in moves])} s",
        "",
        "each move: " + "; ".join(f"{m.source}->{m.target} {m.wall:.2f} s, downtime {m.downtime_ms} ms, "
                                  f"gap {m.longest_gap:.2f} s" for m in moves),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build, boot, move --moves times, print."""
    parser = argparse.ArgumentParser(prog="python -m bench.guest_migration", description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=3, help="migrations, alternating hva->hvb->hva (default 3)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.guest_migration: run it as root (image build, libvirtd, network namespaces)", file=sys.stderr)
        return 2
    load_start = " ".join(f"{v:.2f}" for v in os.getloadavg())
    say("building the guest image from this tree")
    roots = build_guest_image()
    with tempfile.TemporaryDirectory(prefix="sm-bench-gm-") as base, \
            two_hosts_on_a_bridge(Path(base), roots) as lab:
        cluster = lab.env.cluster
        say("booting the seeded guest on hva")
        joined = boot_seeded_guest(cluster, VM)
        before = uptime(cluster, VM)
        moves, where = [], "hva"
        for number in range(args.moves):
            target = "hvb" if where == "hva" else "hva"
            say(f"move {number + 1}/{args.moves}: {where} -> {target}")
            moves.append(one_move(cluster, VM, target))
            where = target
        after = uptime(cluster, VM)
        cluster.cli("virt", "purge", VM, "--timeout", "120")
    print(render(moves, joined, (before, after), (load_start, " ".join(f"{v:.2f}" for v in os.getloadavg()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
