"""The virt benchmark: the cloud controller's inventory work, init on real QEMU, images through the master.

    .venv/bin/python -m bench.virt [--repeat 5] [--image-repeat 3] [--quick]

1. Inventory, in the shape of Salt's figures (shared/salt-figures.md): a master and three agents
   (m0, m1, m2) on loopback, each on libvirt's test driver with its own node file
   (``test:///ABS/PATH/node.xml``: 16 CPUs, 64 GiB, 30 running 2-vCPU 1-GiB VMs with one qcow2
   disk, one bridge NIC and one VNC console; built with ElementTree and checked with
   libvirt-python). After ``virt list`` shows all 90 VMs, each command is timed as a CLI process
   (start included), median of --repeat runs (min–max) after one untimed run.
2. ``virt init`` on a real libvirtd + QEMU (bench/virt_qemu.py), --repeat runs, each purged after;
   skipped with the reason where it cannot run (neither root nor /dev/kvm), and with --quick.
3. Images: a random file written once into the master's file_roots, fetched by
   ``saltmarsh run m0 virt.cache_image master://NAME --timeout 600`` into m0's emptied cache;
   MB/s = size / wall time (MB = 10^6 bytes, as Salt's figures). The first fetch of each image
   (the master also builds its sha256 manifest) is shown apart; then a second fetch of the
   cached image beside the cost of a job (``run m0 test.ping``).

Salt's figures are printed beside ours. The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.cluster import Cluster, wait_until

from .virt_fixtures import MIB, Timing, time_cli, verify_node_file, vm_name, write_node_file, write_random_file
from .virt_qemu import QemuResult, measure_real_qemu

SALT_SOURCE = "Salt 3008.4, measured on a 2-core machine (shared/salt-figures.md)"
AGENTS = ("m0", "m1", "m2")
VMS_PER_AGENT = 30
PROBE_VM = "m0-vm05"
IMAGE_SIZES = ((1024 * MIB, "1 GiB"), (100 * MIB, "100 MiB"), (16 * MIB, "16 MiB"))
QUICK_IMAGE = (64 * MIB, "64 MiB")
TARGET_MB_S = {1024 * MIB: 200.0}
SALT_IMAGE = {1024 * MIB: (17.4, "17.4 s = 62 MB/s"), 100 * MIB: (2.3, "2.3 s = 46 MB/s"), 16 * MIB: (0.94, "0.94 s")}
CACHED_VS_JOB = 1.5  # a cached fetch should cost about one job: at most this many times test.ping
STARTUP_TIMEOUT = 180.0
HEADER = ("MEASURE", "SALTMARSH", "TARGET", "MET", "SALT 3008.4 (2-core machine)", "SALT / US")

# (label, CLI arguments, Salt's figure in seconds, Salt's text, what the output must contain)
ALL_VMS = tuple(vm_name(a, i) for a in AGENTS for i in range(VMS_PER_AGENT))
INVENTORY = (
    ("virt query (all 90 VMs)", ["virt", "query"], 3.79, "3.79 s (3.73–3.87), 12,426 lines", ALL_VMS),
    ("virt host-info", ["virt", "host-info"], 3.71, "3.71 s", AGENTS),
    ("virt list", ["virt", "list"], 3.70, "3.70 s", ALL_VMS),
    ("run '*' virt.full_info", ["run", "*", "virt.full_info"], 3.48, "3.48 s", ALL_VMS),
    (f"run m0 virt.vm_state {PROBE_VM}", ["run", "m0", "virt.vm_state", f"name={PROBE_VM}"], 0.65, "0.65 s",
     (f"{PROBE_VM}: running",)),
)


@dataclass
class Row:
    """One line of the table."""

    measure: str
    ours: str
    salt: str = "—"
    target: str = "—"
    met: str = "—"
    ratio: str = "—"


def say(text: str) -> None:
    """Progress, on stderr so that stdout holds only the table."""
    print(f"[bench.virt] {text}", file=sys.stderr, flush=True)


def ratio(salt_seconds: float | None, ours: float) -> str:
    """How many times faster than Salt, or '—'."""
    return f"{salt_seconds / ours:.0f}×" if salt_seconds and ours > 0 else "—"


def timed_row(label: str, timing: Timing, salt_seconds: float | None, salt_text: str) -> Row:
    """A row for a timed command."""
    return Row(label, timing.text(), salt_text, ratio=ratio(salt_seconds, timing.median))


# ---- the cluster ----------------------------------------------------------------------------


def start_cluster(base: Path, file_root: Path) -> Cluster:
    """A master serving ``file_root`` and three agents on test-driver node files, all 90 VMs listed."""
    cluster = Cluster(base / "cluster", file_roots=[str(file_root)], heartbeat_seconds=10.0, log_level="info")
    cluster.start_master()
    for agent_id in AGENTS:
        node = write_node_file(base / "nodes" / agent_id, agent_id, VMS_PER_AGENT)
        verify_node_file(node, agent_id, VMS_PER_AGENT)
        cluster.start_agent(agent_id, libvirt_uri=f"test://{node}", log_level="info",
                            virt={"vm_dir": str(base / "vms" / agent_id),
                                  "images_dir": str(base / "cache" / agent_id)})
    wait_until(lambda: set(AGENTS) <= set(cluster.pending()), timeout=STARTUP_TIMEOUT, interval=0.3,
               what="three agents' keys to be pending")
    cluster.cli("key", "accept", "--all")
    cluster.wait_answering(*AGENTS, timeout=STARTUP_TIMEOUT)
    wait_until(lambda: all_vms_listed(cluster), timeout=STARTUP_TIMEOUT, interval=0.3,
               what="virt list to show all 90 VMs running")
    return cluster


def all_vms_listed(cluster: Cluster) -> bool:
    """True once ``virt list`` shows every VM of every agent, running."""
    listed = cluster.cli_json("virt", "list")
    return all(listed.get(a, {}).get(vm_name(a, i)) == "running" for a in AGENTS for i in range(VMS_PER_AGENT))


def vm_state(cluster: Cluster, name: str) -> str:
    """The VM's state as its agent reports it."""
    return str(cluster.cli_json("run", "m0", "virt.vm_state", f"name={name}")["m0"][name])


# ---- 1. inventory ---------------------------------------------------------------------------


def measure_inventory(cluster: Cluster, repeat: int) -> list[Row]:
    """The inventory commands and pause/resume by name."""
    rows = []
    for label, args, salt_seconds, salt_text, expected in INVENTORY:
        say(f"timing {' '.join(args)} x{repeat}")
        timing = time_cli(cluster.master_dir, args, repeat)
        missing = [text for text in expected if text not in timing.stdout]
        if missing:
            raise RuntimeError(f"{' '.join(args)} printed no {missing[:3]}:\n{timing.stdout[-2000:]}")
        if args[:2] == ["virt", "query"]:
            lines = len(timing.stdout.splitlines())
            label = f"{label}, {lines:,} lines of output"
        rows.append(timed_row(label, timing, salt_seconds, salt_text))
    rows.extend(measure_pause_resume(cluster, repeat))
    return rows


def measure_pause_resume(cluster: Cluster, repeat: int) -> list[Row]:
    """``virt pause NAME`` then ``virt resume NAME``, each timed, states checked on the agent."""
    pause, resume = Timing(), Timing()
    for i in range(repeat + 1):  # the first cycle is not timed
        for op, timing, state in (("pause", pause, "paused"), ("resume", resume, "running")):
            one = time_cli(cluster.master_dir, ["virt", op, PROBE_VM], 1, warmup=0)
            if one.stdout.strip() != f"{PROBE_VM} on m0: {state}" or vm_state(cluster, PROBE_VM) != state:
                raise RuntimeError(f"virt {op} {PROBE_VM} printed {one.stdout!r}; expected {state}")
            if i:
                timing.seconds.extend(one.seconds)
    note = "3.85 s (full query first; pause lost)"
    return [timed_row(f"virt pause {PROBE_VM} (by name)", pause, 3.85, note),
            timed_row(f"virt resume {PROBE_VM}", resume, None, "—")]


# ---- 3. images ------------------------------------------------------------------------------


def fetch_args(image: str) -> list[str]:
    """The timed image fetch."""
    return ["run", "m0", "virt.cache_image", f"master://{image}", "--timeout", "600"]


def empty_cache(base: Path) -> None:
    """Remove everything m0 has cached, so the next fetch transfers the whole image."""
    cache = base / "cache" / "m0"
    if cache.exists():
        shutil.rmtree(cache)


@dataclass
class Fetches:
    """Wall times of one image's fetches: the first, into an empty cache, and of the cached image."""

    size: int
    text: str
    first: float
    fresh: Timing
    cached: Timing


def fetch_image(cluster: Cluster, base: Path, file_root: Path, size: int, text: str, repeat: int) -> Fetches:
    """Write the image once; fetch it into an emptied cache 1 + ``repeat`` times, then ``repeat`` times cached."""
    image = f"bench-{size // MIB}m.img"
    say(f"writing {text} of random bytes to the master's file_roots")
    write_random_file(file_root / image, size)
    times = []
    for i in range(repeat + 1):
        empty_cache(base)
        say(f"fetching {text} into an empty cache ({'first' if i == 0 else i}/{repeat})")
        times.append(time_cli(cluster.master_dir, fetch_args(image), 1, warmup=0).median)
    cached = time_cli(cluster.master_dir, fetch_args(image), repeat, warmup=0)
    (file_root / image).unlink()
    empty_cache(base)
    return Fetches(size, text, times[0], Timing(times[1:]), cached)


def image_rows(f: Fetches, job: Timing) -> list[Row]:
    """The first fetch, the fetch into an empty cache (MB/s, Salt, target) and the cached fetch."""
    mb_s = f.size / f.fresh.median / 1e6
    target = TARGET_MB_S.get(f.size)
    salt_seconds, salt_text = SALT_IMAGE.get(f.size, (None, "—"))
    near_job = f.cached.median <= CACHED_VS_JOB * job.median
    return [
        Row(f"image {f.text}: first fetch (master builds its manifest)",
            f"{f.first:.2f} s = {f.size / f.first / 1e6:,.0f} MB/s"),
        Row(f"image {f.text}: fetch into an empty cache", f"{f.fresh.text()} = {mb_s:,.0f} MB/s", salt_text,
            f"≥ {target:g} MB/s" if target else "—", ("yes" if mb_s >= target else "NO") if target else "—",
            ratio(salt_seconds, f.fresh.median)),
        Row(f"image {f.text}: second fetch (cached)", f.cached.text(), "—", f"≤ {CACHED_VS_JOB:g}× the job",
            "yes" if near_job else "NO"),
    ]


def measure_images(cluster: Cluster, base: Path, file_root: Path, sizes: tuple[tuple[int, str], ...],
                   repeat: int) -> list[Row]:
    """Every image size, then a job (run m0 test.ping) that the cached fetches are compared with."""
    fetches = [fetch_image(cluster, base, file_root, size, text, repeat) for size, text in sizes]
    job = time_cli(cluster.master_dir, ["run", "m0", "test.ping"], repeat)
    rows = [Row("a job, for comparison: run m0 test.ping", job.text())]
    for f in fetches:
        rows.extend(image_rows(f, job))
    return rows


# ---- 2. real QEMU rows ----------------------------------------------------------------------


def qemu_rows(result: QemuResult | None, why_not: str) -> list[Row]:
    """The init row (and purge row), or one row saying why it was skipped."""
    label = "virt init on real QEMU (1 CPU, 128 MiB, qcow2 overlay, VNC)"
    salt = "3.83 s, reports success but failed on the hypervisor"
    if result is None or result.skipped or result.init is None or result.purge is None:
        return [Row(label, f"SKIPPED: {result.skipped if result else why_not}", salt)]
    return [timed_row(f"{label}, until running ({result.domain_type})", result.init, 3.83, salt),
            timed_row("virt purge of that running VM", result.purge, None, "—")]


# ---- the table ------------------------------------------------------------------------------


def render(sections: list[tuple[str, list[Row]]], args: argparse.Namespace, load: tuple[float, float]) -> str:
    """The table, section by section, with the conditions above it and the source below."""
    cells = [HEADER] + [(r.measure, r.ours, r.target, r.met, r.salt, r.ratio) for _, rows in sections
                        for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    out = [
        "saltmarsh virt benchmark: one master and agents as processes on loopback",
        f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}; load average {load[0]:.2f} at the start, {load[1]:.2f} at the end",
        f"wall time of the whole CLI process, median of {args.repeat} (min–max) after one untimed run; "
        f"image fetches median of {args.image_repeat}",
        "", line(HEADER), "  ".join("-" * w for w in widths),
    ]
    for title, rows in sections:
        out.append(f"[{title}]")
        out.extend(line((r.measure, r.ours, r.target, r.met, r.salt, r.ratio)) for r in rows)
    out += ["", f"Salt's figures: {SALT_SOURCE}.",
            "SALT / US: Salt's time divided by ours. MB = 10^6 bytes. A cached fetch meets its target at "
            f"≤ {CACHED_VS_JOB:g}× the median of run m0 test.ping measured beside it."]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; --quick is a smoke run."""
    parser = argparse.ArgumentParser(prog="python -m bench.virt", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--image-repeat", type=int, default=3, help="timed fetches per image size (default 3)")
    parser.add_argument("--no-qemu", action="store_true", help="skip virt init on real QEMU")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 repeats, one 64 MiB image, no real QEMU")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.image_repeat, args.no_qemu = 2, 1, True
    if args.repeat < 1 or args.image_repeat < 1:
        parser.error("--repeat and --image-repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every section, then print the table."""
    args = parse_args(argv)
    load_start = os.getloadavg()[0]
    sections: list[tuple[str, list[Row]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-virt-") as tmp:
        base = Path(tmp)
        file_root = base / "file_root"
        file_root.mkdir()
        started = time.monotonic()
        say("starting a master and agents m0, m1, m2 (30 VMs each on the test driver)")
        cluster = start_cluster(base, file_root)
        try:
            say(f"all 90 VMs listed after {time.monotonic() - started:.1f} s")
            sections.append(("3 hypervisors x 30 VMs, libvirt test driver", measure_inventory(cluster, args.repeat)))
            sizes = (QUICK_IMAGE,) if args.quick else IMAGE_SIZES
            sections.append(("images through the master (m0)",
                             measure_images(cluster, base, file_root, sizes, args.image_repeat)))
        except BaseException:
            cluster.print_log_tails()
            raise
        finally:
            cluster.stop()
        qemu = None if args.no_qemu else measure_real_qemu(base / "qemu", args.repeat)
        sections.insert(1, ("virt init on a real libvirtd + QEMU",
                            qemu_rows(qemu, "--quick" if args.quick else "--no-qemu")))
    print(render(sections, args, (load_start, os.getloadavg()[0])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
