"""Host setup's wall times: a fresh Debian host (a booted container), and a dry run on a swarm of agents.

    .venv/bin/python -m bench.host_setup [--agents 100] [--processes 4] [--no-container] [--no-swarm]

Container (root, tests/container.py): a fresh booted Debian with the agent and setup helper
under their units, apt on a local directory of .debs, eth0 given 10.77.0.2/24 by networkd and
the master behind it on a veth (its own namespace). Timed, each as the CLI's wall time:
a dry run on the fresh host, the first ``host setup`` (packages hello and tree from the local
directory, a group member, two sysctls, two files, a service, and br0 over eth0 with its
rollback guard confirmed), the second run (nothing to change) and a dry run after it.
Real hypervisor packages (libvirt, QEMU) are not in the local directory: their install time is
the mirror's and dpkg's, not saltmarsh's, and is not measured here.

Swarm: one master, a setup helper (root, serving this uid), and N swarm agents
(agent/swarm.py) sharing it; ``host setup 'sw-*' --dry-run`` with the states a swarm member
can run on this machine (pkg queried with dpkg-query, a file, a sysctl read, a group, a
service's systemctl queries; no bridge: the members share this host's network). Each member
hands the helper the master's signed job; the helper runs one request at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.swarm import SWARM_ID, SwarmBench
from tests import container as harness
from tests.cluster import BIN, Cluster, Daemon, wait_until
from tests.container_host import uplinked

NAME = "sm-bench1"
AGENT_CIDR, MASTER_CIDR = "10.77.0.2/24", "10.77.0.1/24"
UNIT = ("[Unit]\nDescription=bench service\n[Service]\nExecStart=/bin/sleep infinity\n"
        "[Install]\nWantedBy=multi-user.target\n")
CONTAINER_PROFILE: dict[str, Any] = {
    "packages": {"debian": ["hello", "tree"], "redhat": []},
    "groups": {"adm": ["saltmarsh"]},
    "sysctls": {"net.ipv4.ip_forward": "1", "net.ipv4.ping_group_range": "0 2147483647"},
    "bridge": {"device": "eth0"},
    "states": [{"kind": "file", "name": "motd", "path": "/etc/motd", "content": "a saltmarsh hypervisor\n"},
               {"kind": "file", "name": "unit", "path": "/etc/systemd/system/sm-bench.service", "content": UNIT}],
    "services": ["sm-bench.service"],
}


def swarm_profile(root: Path) -> dict[str, Any]:
    """States a swarm member can ask about on this machine without touching it (a dry run)."""
    return {"packages": {"debian": ["dpkg", "saltmarsh-bench-absent"], "redhat": []}, "groups": {"root": ["root"]},
            "sysctls": {"net.ipv4.ip_forward": "1"}, "bridge": None, "services": ["saltmarsh-bench-absent.service"],
            "states": [{"kind": "file", "name": "conf", "path": str(root / "conf"), "content": "x\n"}]}


def timed(cluster: Cluster, target: str, profile: str, *words: str) -> tuple[float, dict[str, Any]]:
    """One ``host setup`` CLI run: its wall time and its --json output."""
    started = time.monotonic()
    result = cluster.cli("host", "setup", target, "--profile", profile, *words, "--json", check=False, timeout=1800)
    took = time.monotonic() - started
    if not result.stdout:
        raise RuntimeError(f"host setup printed nothing: {result.stderr}")
    return took, json.loads(result.stdout)


def counts(outcome: dict[str, Any]) -> str:
    """How many states of each status, over every host."""
    seen: dict[str, int] = {}
    for host in outcome["hosts"].values():
        if "error" in host:
            seen["host error"] = seen.get("host error", 0) + 1
        for result in host.get("results", []):
            seen[result["status"]] = seen.get(result["status"], 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(seen.items()))


def container_figures(work: Path) -> list[tuple[str, float, str]]:
    """The four timed runs on a fresh container."""
    started = time.monotonic()
    (work / "parts").mkdir()
    with (work / "parts.log").open("w") as log:
        parts = harness.make_parts(work / "parts", ["hello", "tree"], log)
    rows = [("container parts (base, wheels, repo)", time.monotonic() - started, "")]
    master_ip = MASTER_CIDR.split("/")[0]
    cluster = Cluster(work / "cluster", interface=master_ip, host={"profiles": {"bench": CONTAINER_PROFILE}})
    agent = {"id": NAME, "master": master_ip, "publish_port": cluster.publish_port,
             "request_port": cluster.request_port, "libvirt_uri": "test:///default", "auth_retry_seconds": 0.5}
    files = {"/etc/saltmarsh/agent.yaml": harness.yaml_file(agent), "/etc/hostname": f"{NAME}\n",
             "/etc/saltmarsh/setup-helper.yaml": harness.yaml_file({}), **harness.networkd_file("eth0", AGENT_CIDR)}
    started = time.monotonic()
    with uplinked(cluster, parts, work / "box", NAME, files, MASTER_CIDR):
        cluster.accept(NAME)
        rows.append(("container made and booted, the agent's key accepted", time.monotonic() - started, ""))
        for label, words in (("dry run, fresh host", ("--dry-run",)), ("first run (fresh host)", ()),
                             ("second run (nothing to change)", ()), ("dry run after", ("--dry-run",))):
            took, outcome = timed(cluster, NAME, "bench", *words)
            rows.append((label, took, counts(outcome)))
    return rows


def swarm_figures(work: Path, agents: int, processes: int) -> list[tuple[str, float, str]]:
    """A dry run on ``agents`` swarm members sharing one setup helper."""
    root = work / "host"
    root.mkdir()
    helper_dir = work / "helper"
    helper_dir.mkdir()
    sock = work / "run" / "setup.sock"
    agents_dir = work / "swarm" / "agents" / SWARM_ID / "state"
    (helper_dir / "setup-helper.yaml").write_text(yaml.safe_dump({
        "socket": str(sock), "agent_user": "root", "root_dir": "state", "log_level": "warning",
        "master_key_file": str(agents_dir / f"{SWARM_ID}-00000" / "pki" / "master.pub")}))
    helper = Daemon("helper", helper_dir, [str(BIN / "saltmarsh-setup-helper"), "-c", str(helper_dir)])
    helper.start()
    bench = SwarmBench(work / "swarm", agents, processes,
                       master_settings={"host": {"profiles": {"swarm": swarm_profile(root)}}},
                       agent_settings={"setup_socket": str(sock)})
    try:
        wait_until(sock.exists, what="the helper's socket")
        started = time.monotonic()
        bench.start()
        rows = [(f"start {agents} swarm agents, keys accepted", time.monotonic() - started, "")]
        for label in ("dry run", "dry run again"):
            took, outcome = timed(bench.cluster, f"{SWARM_ID}-*", "swarm", "--dry-run")
            rows.append((f"{label}, {agents} agents", took, counts(outcome)))
        return rows
    finally:
        bench.stop()
        helper.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts and print their figures."""
    parser = argparse.ArgumentParser(prog="bench.host_setup", description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--no-container", action="store_true")
    parser.add_argument("--no-swarm", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.host_setup: needs root (a booted container; a setup helper as root)", file=sys.stderr)
        return 2
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="sm-bench-setup-") as tmp:
        if not args.no_container:
            reason = harness.skip_reason()
            if reason:
                print(f"container part skipped: {reason}", file=sys.stderr)
            else:
                (Path(tmp) / "container").mkdir()
                rows += container_figures(Path(tmp) / "container")
        if not args.no_swarm:
            (Path(tmp) / "swarm-part").mkdir()
            rows += swarm_figures(Path(tmp) / "swarm-part", args.agents, args.processes)
    print(f"{'what':<45} {'wall':>8}  states")
    for label, seconds, states in rows:
        print(f"{label:<45} {seconds:>7.2f}s  {states}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
