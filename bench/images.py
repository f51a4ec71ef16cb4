"""The image benchmark: master:// images through the master, beside ``cp`` and sha256 of the same file.

    .venv/bin/python -m bench.images [--size-mib 1024] [--agents 5] [--repeat 3] [--quick]

A real master (tests/cluster.py, with ``file_roots``) and --agents real agent processes (hv1, hv2, ...)
on libvirt's test:///default driver, each with its own ``virt.images_dir``, all under one temporary
directory, so every copy lands on one filesystem.

1. One agent. A file of --size-mib MiB of random bytes is written into the file root and read once,
   so that every reader after finds it in the page cache (dropping the caches would need root and
   slow every other user of the machine). The first fetch, while the master also builds the file's
   manifest (sha256 of the whole, BLAKE3 of every chunk), is shown apart. Then --repeat rounds, each
   of ``cp`` of the file to a new file in the same directory tree, sha256 of it (hashlib, as the
   master's manifest; coreutils' ``sha256sum``), BLAKE3 of it (what checks every frame and chunk),
   and ``saltmarsh run hv1 virt.cache_image master://NAME`` into hv1's emptied cache: the agent's own
   code path, job dispatch included (``run hv1 test.ping`` is timed beside it). Figures are medians;
   MB/s is size / wall time, MB = 10^6 bytes; "vs cp" is the fetch's MB/s over the median of the
   ``cp`` runs of the same rounds. "Bound by CPU" is what the fetch's measured CPU (master and agent,
   every thread, kernel time included) allows if both had this machine's CPUs to themselves: with
   both ends on one host, their CPU seconds add up, where ``cp`` needs one CPU.
2. Every agent at once. A new random file of the same size; ``saltmarsh run -L hv1,...,hvN
   virt.cache_image master://NEW``: aggregate MB/s = N x size / wall time, with the master's CPU
   seconds over it (user + system, /proc/<pid>/stat; its manifest included) and the agents'.

Salt's figure is printed beside ours. The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from tests.cluster import Cluster

from .virt_fixtures import MIB, write_random_file

SALT_MB_S = 37.6
SALT_SOURCE = ("Salt 3008.4 cp.cache_file of a 1 GiB file: 37.6 MB/s, measured beside saltmarsh on this machine "
               "(issue 11)")
TARGET_VS_CP = 0.5
TICKS = os.sysconf("SC_CLK_TCK")
HEADER = ("MEASURE", "SALTMARSH", "VS CP", "TARGET", "MET", "SALT 3008.4")
FETCH_TIMEOUT = 900


def say(text: str) -> None:
    """Progress, on stderr so that stdout holds only the table."""
    print(f"[bench.images] {text}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def timed(fn: Callable[..., object], *args: object) -> float:
    """Wall seconds of ``fn(*args)``."""
    started = time.monotonic()
    fn(*args)
    return time.monotonic() - started


def mb_s(size: int, seconds: float) -> float:
    """MB (10^6 bytes) per second."""
    return size / seconds / 1e6


@dataclass
class Single:
    """One agent's fetches and the references measured beside them."""

    size: int
    first: float = 0.0
    fetch: list[float] = field(default_factory=list)
    cp: list[float] = field(default_factory=list)
    sha256: list[float] = field(default_factory=list)
    blake3: list[float] = field(default_factory=list)
    sha256sum: list[float] = field(default_factory=list)
    ping: list[float] = field(default_factory=list)
    master_cpu: list[float] = field(default_factory=list)
    agent_cpu: list[float] = field(default_factory=list)


@dataclass
class Crowd:
    """Every agent fetching one new image at once."""

    agents: int
    size: int
    seconds: float
    master_cpu: float
    agents_cpu: float


class Bench:
    """A master with file_roots and N agents, each with its own image cache."""

    def __init__(self, base: Path, agents: int) -> None:
        self.base = base
        self.root = base / "file_root"
        self.root.mkdir()
        self.ids = [f"hv{i + 1}" for i in range(agents)]
        self.cluster = Cluster(base / "cluster", file_roots=[str(self.root)], log_level="info")

    def start(self) -> None:
        """Start the master and the agents and accept them."""
        self.cluster.start_master()
        for agent_id in self.ids:
            self.cluster.start_agent(agent_id, log_level="info",
                                     virt={"vm_dir": str(self.base / "vms" / agent_id),
                                           "images_dir": str(self.cache(agent_id))})
        self.cluster.accept(*self.ids)

    def stop(self) -> None:
        """Stop every daemon."""
        self.cluster.stop()

    def cache(self, agent_id: str) -> Path:
        """An agent's image cache."""
        return self.base / "cache" / agent_id

    def empty_caches(self) -> None:
        """Remove what every agent has cached, so that the next fetch transfers the whole image."""
        for agent_id in self.ids:
            if self.cache(agent_id).exists():
                for cached in self.cache(agent_id).iterdir():
                    cached.unlink()

    def run(self, target: list[str], *args: str) -> object:
        """``saltmarsh run -L TARGET ARGS --json``; AssertionError unless every agent answered without error."""
        result = self.cluster.cli("run", "-L", ",".join(target), *args, "--json", "--timeout", str(FETCH_TIMEOUT),
                                  timeout=FETCH_TIMEOUT + 60)
        replies = json.loads(result.stdout)
        failed = {a: r for a, r in replies.items() if isinstance(r, dict) and "error" in r}
        if set(replies) != set(target) or failed:
            raise AssertionError(f"run {' '.join(args)}: {result.stdout[-2000:]}")
        return replies

    def fetch(self, target: list[str], image: str) -> float:
        """Wall seconds of ``virt.cache_image master://IMAGE`` on every agent of ``target`` at once."""
        return timed(self.run, target, "virt.cache_image", f"master://{image}")

    def daemon_pids(self) -> tuple[int, dict[str, int]]:
        """The master's pid and the agents', by id."""
        master = self.cluster.master.proc
        assert master is not None
        return master.pid, {a: d.proc.pid for a, d in self.cluster.agents.items() if d.proc is not None}


def warm(path: Path) -> None:
    """Read ``path`` once, so that the readers timed after find it in the page cache."""
    with path.open("rb") as handle:
        while handle.read(8 * MIB):
            pass


def hash_file(path: Path) -> None:
    """sha256 of ``path`` with hashlib, in 1 MiB reads (what the master's manifest costs)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(MIB):
            digest.update(block)


def blake3_file(path: Path) -> None:
    """BLAKE3 of ``path``, in 1 MiB reads: what each side's frame digest and the agent's chunk check cost."""
    hasher = blake3.blake3()
    with path.open("rb") as handle:
        while block := handle.read(MIB):
            hasher.update(block)


def copy_file(source: Path, target: Path) -> None:
    """``cp`` of ``source`` to a new file ``target``, and the file removed again."""
    subprocess.run(["cp", str(source), str(target)], check=True)
    target.unlink()


def sha256sum(path: Path) -> None:
    """coreutils' ``sha256sum`` of ``path``."""
    subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)


def measure_single(bench: Bench, repeat: int, size: int) -> Single:
    """One agent's fetches into an emptied cache, round by round beside cp, sha256 and a job."""
    image = bench.root / "single.img"
    write_random_file(image, size)
    warm(image)
    figures = Single(size)
    agent = bench.ids[0]
    say(f"first fetch of {size // MIB} MiB by {agent} (the master builds its manifest)")
    figures.first = bench.fetch([agent], image.name)
    master_pid, agent_pids = bench.daemon_pids()
    agent_pid = agent_pids[agent]
    scratch = bench.base / "cache" / "cp-target.img"
    for round_ in range(repeat):
        say(f"round {round_ + 1} of {repeat}: cp, sha256, BLAKE3, sha256sum, fetch")
        figures.cp.append(timed(copy_file, image, scratch))
        figures.sha256.append(timed(hash_file, image))
        figures.blake3.append(timed(blake3_file, image))
        figures.sha256sum.append(timed(sha256sum, image))
        figures.ping.append(timed(bench.run, [agent], "test.ping"))
        bench.empty_caches()
        cpu = cpu_seconds(master_pid), cpu_seconds(agent_pid)
        figures.fetch.append(bench.fetch([agent], image.name))
        figures.master_cpu.append(cpu_seconds(master_pid) - cpu[0])
        figures.agent_cpu.append(cpu_seconds(agent_pid) - cpu[1])
    bench.empty_caches()
    image.unlink()
    return figures


def measure_crowd(bench: Bench, size: int) -> Crowd:
    """Every agent fetching one new image at once; the master's and the agents' CPU over it."""
    image = bench.root / "crowd.img"
    write_random_file(image, size)
    warm(image)
    master_pid, agent_pids = bench.daemon_pids()
    say(f"{len(bench.ids)} agents fetching a new {size // MIB} MiB image at once")
    before = cpu_seconds(master_pid), sum(map(cpu_seconds, agent_pids.values()))
    seconds = bench.fetch(bench.ids, image.name)
    crowd = Crowd(len(bench.ids), size, seconds, cpu_seconds(master_pid) - before[0],
                  sum(map(cpu_seconds, agent_pids.values())) - before[1])
    bench.empty_caches()
    image.unlink()
    return crowd


def spread(values: list[float]) -> str:
    """`` (min–max)`` when there is more than one value."""
    return f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else ""


def rows(single: Single, crowd: Crowd) -> list[tuple[str, ...]]:
    """The table's rows: the fetch, its references, and the crowd."""
    size, mib = single.size, single.size // MIB
    cp = mb_s(size, statistics.median(single.cp))
    fetch_s = statistics.median(single.fetch)
    fetch = mb_s(size, fetch_s)
    vs_cp = fetch / cp
    per_gib = 1024 / mib
    # The fastest the fetch could be if it had every CPU here to itself: master and agent share them.
    cpu_per_byte = (statistics.median(single.master_cpu) + statistics.median(single.agent_cpu)) / size
    cpu_bound = (os.cpu_count() or 1) / cpu_per_byte / 1e6

    def rate(label: str, seconds: list[float]) -> tuple[str, ...]:
        s = statistics.median(seconds)
        return (label, f"{s:.2f} s{spread(seconds)} = {mb_s(size, s):,.0f} MB/s", f"{mb_s(size, s) / cp:.2f}x",
                "—", "—", "—")

    crowd_rate = mb_s(crowd.agents * crowd.size, crowd.seconds)
    return [
        (f"fetch {mib} MiB into an empty cache (1 agent)", f"{fetch_s:.2f} s{spread(single.fetch)} = {fetch:,.0f} MB/s",
         f"{vs_cp:.2f}x", f"≥ {TARGET_VS_CP:.2f}x cp", "yes" if vs_cp >= TARGET_VS_CP else "NO",
         f"{SALT_MB_S} MB/s (ours: {fetch / SALT_MB_S:.1f}x that)"),
        ("  CPU per GiB: master / agent", f"{statistics.median(single.master_cpu) * per_gib:.2f} s / "
         f"{statistics.median(single.agent_cpu) * per_gib:.2f} s", "—", "—", "—", "—"),
        ("  bound by CPU here: both ends on this machine's CPUs",
         f"{cpu_bound:,.0f} MB/s", f"{cpu_bound / cp:.2f}x", "—", "—", "—"),
        ("  first fetch (the master builds the manifest too)",
         f"{single.first:.2f} s = {mb_s(size, single.first):,.0f} MB/s", f"{mb_s(size, single.first) / cp:.2f}x",
         "—", "—", "—"),
        rate(f"cp {mib} MiB, same filesystem (page-cache source)", single.cp),
        rate(f"sha256 {mib} MiB (hashlib, as the master's manifest)", single.sha256),
        rate(f"BLAKE3 {mib} MiB (as each frame and chunk is checked)", single.blake3),
        rate(f"sha256sum {mib} MiB (coreutils)", single.sha256sum),
        ("  job overhead in each fetch (run hv1 test.ping)",
         f"{statistics.median(single.ping):.2f} s{spread(single.ping)}", "—", "—", "—", "—"),
        (f"{crowd.agents} agents fetch a new {mib} MiB image at once",
         f"{crowd.seconds:.2f} s = {crowd_rate:,.0f} MB/s aggregate", f"{crowd_rate / cp:.2f}x", "—", "—",
         f"{SALT_MB_S} MB/s (1 minion)"),
        ("  master CPU over it (manifest included)", f"{crowd.master_cpu:.2f} s = "
         f"{crowd.master_cpu / (crowd.agents * mib / 1024):.2f} s per GiB sent", "—", "—", "—", "—"),
        ("  agents' CPU over it, all together", f"{crowd.agents_cpu:.2f} s", "—", "—", "—", "—"),
    ]


def render(table: list[tuple[str, ...]], args: argparse.Namespace, load: tuple[tuple[float, ...], ...]) -> str:
    """The table with the conditions above it and the source below."""
    cells = [HEADER, *table]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    averages = "; ".join(f"{when} {' '.join(f'{v:.2f}' for v in values)}"
                         for when, values in zip(("start", "end"), load, strict=True))
    return "\n".join([
        "saltmarsh image benchmark: master:// images through one master to agents on loopback",
        f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}; load averages (1, 5, 15 min) at the {averages}",
        f"{args.size_mib} MiB of random bytes; 1-agent figures: median (min–max) of {args.repeat} round(s) of cp, "
        "sha256, sha256sum and the fetch in turn; a fetch is the wall time of the whole CLI process",
        "", line(HEADER), "  ".join("-" * w for w in widths), *map(line, table), "",
        f"{SALT_SOURCE}.",
        "VS CP: MB/s over the median MB/s of cp in the same rounds. MB = 10^6 bytes.",
    ])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; --quick is a smoke run."""
    parser = argparse.ArgumentParser(prog="python -m bench.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="image size in MiB (default 1024)")
    parser.add_argument("--agents", type=int, default=5, help="agents fetching at once (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="1-agent rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 MiB, 2 agents, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.agents, args.repeat = 64, 2, 1
    if args.size_mib < 1 or args.agents < 1 or args.repeat < 1:
        parser.error("--size-mib, --agents and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Start the daemons, measure, print the table."""
    args = parse_args(argv)
    load_start = os.getloadavg()
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        free = shutil.disk_usage(tmp).free
        if free < size * (args.agents + 3):
            raise SystemExit(f"bench.images needs {size * (args.agents + 3) / 1e9:.1f} GB free in {tmp}; "
                             f"{free / 1e9:.1f} GB are")
        bench = Bench(Path(tmp), args.agents)
        say(f"starting a master and {args.agents} agents")
        bench.start()
        try:
            single = measure_single(bench, args.repeat, size)
            crowd = measure_crowd(bench, size)
        except BaseException:
            bench.cluster.print_log_tails()
            raise
        finally:
            bench.stop()
    print(render(rows(single, crowd), args, (load_start, os.getloadavg())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
