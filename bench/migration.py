"""Migration benchmark: live migration of a 256 MiB VM between two real libvirtd over TLS, and the
certificate issuance round trip (CSR -> files on disk), printed.

    .venv/bin/python -m bench.migration [--runs N]

Two hypervisors on this one machine (tests/twohosts.py: the second libvirtd in its own mount+UTS
namespace), each with TLS certificates issued by the master's CA through saltmarsh's CSR flow.
Salt prints no figure for this: its virt.migrate runner fires and forgets (saltstack/salt#11259).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.cluster import BIN, Cluster, wait_until
from tests.realvirt import TEST_PREFIX, RealLibvirtd, make_image_dir, remove_image_dir
from tests.twohosts import HV_A_ADDRESS, HV_B_ADDRESS, HV_B_HOSTNAME, OtherLibvirtdRunning, TwoHypervisors

NAMES = {"hva": ["localhost", HV_A_ADDRESS], "hvb": [HV_B_HOSTNAME, HV_B_ADDRESS]}
VM = f"{TEST_PREFIX}bench-mig"


def say(text: str) -> None:
    """Progress, on stderr."""
    print(f"[bench.migration] {text}", file=sys.stderr, flush=True)


def cli(cluster: Cluster, *args: str) -> tuple[float, str]:
    """Run the CLI; return (wall seconds, stdout)."""
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "saltmarsh"), "-c", str(cluster.master_dir), *args], capture_output=True,
                          text=True, timeout=300, check=True)
    return time.perf_counter() - started, done.stdout


def issue_certificates(cluster: Cluster, roots: dict[str, Path], runs: int) -> list[float]:
    """Start agents that fetch certificates; time `virt.keys` (CSR -> files on disk) ``runs`` times."""
    for host in NAMES:
        cluster.start_agent(host, libvirt_tls=True, pki_root=str(roots[host]), tls_names=NAMES[host],
                            libvirt_uri="test:///default")
    cluster.accept(*NAMES)
    for host in NAMES:
        wait_until(lambda h=host: (roots[h] / "libvirt" / "private" / "clientkey.pem").exists())
    inside = []
    for _ in range(runs):
        _wall, out = cli(cluster, "run", "hva", "virt.keys", "--json")
        assert json.loads(out)["hva"]["names"] == ["hva", *NAMES["hva"]]
        job = cluster.cli_json("job", "list")[0]
        inside.append(cluster.cli_json("job", "show", job["jid"])["returns"]["hva"]["duration"])
    for host in NAMES:
        cluster.agents[host].stop()
    return inside


def migrate(cluster: Cluster, target: str) -> tuple[float, dict[str, object]]:
    """One migration through the CLI: (wall seconds, the master's result)."""
    wall, out = cli(cluster, "virt", "migrate", VM, target, "--json", "--timeout", "120")
    return wall, json.loads(out)


def run(runs: int) -> int:
    """Set up, measure, print."""
    base = Path(tempfile.mkdtemp(prefix="bench-migration-"))
    cluster = Cluster(base / "cluster", log_level="info", pki={"allowed_names": NAMES},
                      virt={"migration_uris": {"hva": f"qemu+tls://{HV_A_ADDRESS}/system",
                                               "hvb": f"qemu+tls://{HV_B_ADDRESS}/system"},
                            "migration_unsafe": True})
    cluster.start_master()
    roots = {host: base / f"pki-{host}" for host in NAMES}
    images = make_image_dir()
    try:
        say("issuing certificates through the CSR flow")
        issuance = issue_certificates(cluster, roots, runs)
        reason = RealLibvirtd.skip_reason()
        if reason:
            print(f"migration: SKIPPED ({reason})")
            return 0
        two = TwoHypervisors(roots["hva"], roots["hvb"])
        try:
            two.start()
        except OtherLibvirtdRunning as exc:
            print(f"migration: SKIPPED ({exc})")
            return 0
        try:
            for host, hv in (("hva", two.a), ("hvb", two.b)):
                cluster.start_agent(host, libvirt_tls=True, pki_root=str(roots[host]), tls_names=NAMES[host],
                                    libvirt_uri=hv.uri, log_level="info",
                                    virt={"vm_dir": str(images / "vms"), "nic_profiles": {"default": []}})
            wait_until(lambda: len([h for h in cluster.cli_json("virt", "host-info").values() if h["libvirt"]]) == 2,
                       timeout=60, what="both hypervisors")
            cli(cluster, "virt", "init", VM, "1", "256", "--host", "hva", "--timeout", "120")
            say(f"migrating a 256 MiB VM {2 * runs} times")
            walls, seconds, downtimes = [], [], []
            for _ in range(runs):
                for target in ("hvb", "hva"):
                    wall, result = migrate(cluster, target)
                    outcome = result["result"]
                    assert isinstance(outcome, dict)
                    walls.append(wall)
                    seconds.append(float(outcome["seconds"]))
                    if outcome.get("downtime_ms") is not None:
                        downtimes.append(float(outcome["downtime_ms"]))
            cli(cluster, "virt", "purge", VM)
        finally:
            two.stop()
    finally:
        cluster.stop()
        remove_image_dir(images)
    print_table(issuance, walls, seconds, downtimes)
    return 0


def _median(values: list[float], scale: float = 1.0, unit: str = "s", digits: int = 3) -> str:
    if not values:
        return "n/a"
    scaled = [v * scale for v in values]
    return (f"{statistics.median(scaled):.{digits}f} {unit} "
            f"({min(scaled):.{digits}f}–{max(scaled):.{digits}f}, n={len(values)})")


def print_table(issuance: list[float], walls: list[float], seconds: list[float], downtimes: list[float]) -> None:
    """The figures, with Salt's (none: its migrate runner fires and forgets)."""
    print("saltmarsh migration benchmark: two real libvirtd on this machine, libvirt TLS, 256 MiB VM, KVM")
    print(f"{'MEASURE':<58} {'SALTMARSH':<40} SALT 3008.4")
    print(f"{'certificate issuance (CSR -> files on disk), on the agent':<58} "
          f"{_median(issuance, 1000, 'ms', 1):<40} keys made on the master, shipped in pillar")
    print(f"{'live migration, libvirt job (wall inside the agent)':<58} {_median(seconds):<40} "
          "fires and forgets (#11259)")
    print(f"{'live migration, CLI wall incl. confirmation by events':<58} {_median(walls):<40} —")
    print(f"{'downtime (libvirt job stats)':<58} {_median(downtimes, 1, 'ms', 0):<40} —")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.migration", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="round trips (each is two migrations)")
    return run(parser.parse_args(argv).runs)


if __name__ == "__main__":
    sys.exit(main())
