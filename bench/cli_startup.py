"""The CLI start-up benchmark: ``saltmarsh --help``, ``key list`` and ``run hv1 test.ping`` beside ``python3 -c pass``.

    .venv/bin/python -m bench.cli_startup [--repeat 20] [--quick]

A master and one agent (hv1) run as processes on loopback (tests/cluster.py, libvirt's
test:///default driver). Each command is one whole process, timed from its start to its exit
(time.perf_counter around subprocess.run), its output checked; every round runs every command
once, in turn, so that the machine's load falls on all of them alike; medians of --repeat rounds
(min–max) after one untimed round. The reference, ``python3 -c pass``, is the interpreter the
venv was made from (sys.base_prefix: no site-packages, no editable-install finder), measured in
the same rounds; beside it ``.venv/bin/python -c pass``, which pays for the venv's site-packages
(the editable install's finder is imported at every start) as every ``saltmarsh`` command does,
and the same interpreter importing only the libraries a command that talks to the master cannot
do without (argparse, msgspec, pyzmq): the floor under the full CLI's commands. ``run hv1 test.ping``
and ``key list`` go under it by the CLI's fast path (master/cli/fast.py: the stdlib, over the
control stream socket).

Bytecode is measured both ways, because it changes the answer:

- ``PYTHONDONTWRITEBYTECODE=1``, as this environment sets it: no .pyc is written, so with an
  editable install every saltmarsh module is compiled from source at every start (the
  dependencies in site-packages have their .pyc from pip);
- bytecode cached: PYTHONDONTWRITEBYTECODE unset and PYTHONPYCACHEPREFIX pointed at a fresh
  directory of this run (so the checkout is not touched), written by the untimed round: what an
  installed package (pip compiles it) or any machine without that variable gets.

The table goes to stdout, progress to stderr; the load averages at the start and the end are
printed with it (the machine is shared: timings vary with what else runs).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster import BIN, Cluster

TARGET_RATIO = 4.0  # the goal: run hv1 test.ping within 4x python3 -c pass
REFERENCE = "python3 -c pass"
DEPENDENCIES = "import argparse, msgspec, zmq"


@dataclass
class Command:
    """One command line to time, and the stdout it must print."""

    label: str
    argv: list[str]
    expect: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def run(self, env: dict[str, str]) -> tuple[float, float]:
        """Run it once: its wall time and its CPU time (user + system) in seconds.

        RuntimeError if it failed or printed something else.
        """
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run(self.argv, capture_output=True, text=True, env=env, timeout=60)
        took = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0 or self.expect not in result.stdout:
            raise RuntimeError(f"{self.label}: exit {result.returncode}, stdout {result.stdout[-500:]!r}, "
                               f"stderr {result.stderr[-500:]!r}")
        return took, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    @property
    def median(self) -> float:
        """The median of the timed runs."""
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float:
        """The median CPU time (user + system) of the timed runs."""
        return statistics.median(self.cpu)

    def text(self) -> str:
        """``12.3 ms (11.0–15.2)``."""
        return f"{self.median * 1000:.1f} ms ({min(self.seconds) * 1000:.1f}–{max(self.seconds) * 1000:.1f})"


def say(text: str) -> None:
    """Progress, on stderr so that stdout holds only the table."""
    print(f"[bench.cli_startup] {text}", file=sys.stderr, flush=True)


def base_python() -> str:
    """The interpreter the venv was made from: ``python3 -c pass`` as a shell would run it, without the venv."""
    for name in (f"python{sys.version_info.major}.{sys.version_info.minor}", "python3"):
        candidate = Path(sys.base_prefix) / "bin" / name
        if candidate.exists():
            return str(candidate)
    raise RuntimeError(f"no python3 under {sys.base_prefix}")


def commands(cluster: Cluster) -> list[Command]:
    """The references and the three saltmarsh commands, each with what it must print."""
    cli = [str(BIN / "saltmarsh"), "-c", str(cluster.master_dir)]
    return [
        Command(REFERENCE, [base_python(), "-c", "pass"], ""),
        Command(".venv/bin/python -c pass", [sys.executable, "-c", "pass"], ""),
        # The floor under a command of the full CLI that talks to the master: the libraries it cannot do without.
        Command(f".venv/bin/python -c '{DEPENDENCIES}'", [sys.executable, "-c", DEPENDENCIES], ""),
        Command("saltmarsh --help", [str(BIN / "saltmarsh"), "--help"], "usage: saltmarsh"),
        Command("saltmarsh key list", [*cli, "key", "list"], "hv1"),
        Command("saltmarsh run hv1 test.ping", [*cli, "run", "hv1", "test.ping"], "hv1:\n    true"),
    ]


def environment(mode: str, cache: Path) -> dict[str, str]:
    """The environment of a mode: ``nobytecode`` (PYTHONDONTWRITEBYTECODE=1) or ``cached`` (a fresh pycache)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    if mode == "nobytecode":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def measure(cluster: Cluster, mode: str, cache: Path, repeat: int) -> list[Command]:
    """Every command, ``repeat`` interleaved rounds after one untimed one (which fills the cache)."""
    timed = commands(cluster)
    env = environment(mode, cache)
    for round_no in range(repeat + 1):
        for command in timed:
            took, cpu = command.run(env)
            if round_no:
                command.seconds.append(took)
                command.cpu.append(cpu)
    return timed


def rows(timed: list[Command]) -> list[tuple[str, ...]]:
    """(measure, wall time, its ratio to python3 -c pass, target, CPU time, its ratio) per command."""
    reference, reference_cpu = timed[0].median, timed[0].cpu_median
    out = []
    for command in timed:
        ratio = command.median / reference
        target = f"≤ {TARGET_RATIO:g}x  {'yes' if ratio <= TARGET_RATIO else 'NO'}" \
            if command.label.startswith("saltmarsh run") else "—"
        cpu_ratio = f"{command.cpu_median / reference_cpu:.2f}x" if reference_cpu > 0 else "—"
        out.append((command.label, command.text(), f"{ratio:.2f}x", target,
                    f"{command.cpu_median * 1000:.1f} ms", cpu_ratio))
    return out


def render(sections: list[tuple[str, list[Command]]], repeat: int, load: tuple[str, str]) -> str:
    """The table, one section per bytecode mode."""
    header = ("MEASURE", "WALL TIME, MEDIAN (MIN–MAX)", f"VS {REFERENCE.upper()}", "TARGET", "CPU, MEDIAN", "CPU VS")
    cells = [header] + [row for _, timed in sections for row in rows(timed)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    out = [
        "saltmarsh CLI start-up: whole processes, a master and agent hv1 on loopback",
        f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}; {REFERENCE} is {base_python()}",
        f"load averages: {load[0]} at the start; {load[1]} at the end",
        f"median of {repeat} interleaved rounds (min–max) after one untimed round, per mode; CPU is the "
        "process's user + system time (getrusage), which a loaded machine inflates less than wall time",
        "", line(header), "  ".join("-" * w for w in widths),
    ]
    for title, timed in sections:
        out.append(f"[{title}]")
        out.extend(line(row) for row in rows(timed))
    return "\n".join(out)


def load_averages() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


MODES = (("nobytecode", "PYTHONDONTWRITEBYTECODE=1 (this environment): saltmarsh compiled at every start"),
         ("cached", "bytecode cached (PYTHONPYCACHEPREFIX, written by the untimed round)"))


def main(argv: list[str] | None = None) -> int:
    """Start the cluster, time both modes, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed rounds per mode (default 20)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 rounds")
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else args.repeat
    if repeat < 1:
        parser.error("--repeat must be positive")
    load_start = load_averages()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        cluster = Cluster(Path(tmp) / "cluster", heartbeat_seconds=10.0, log_level="info")
        say("starting a master and agent hv1")
        cluster.start_master()
        try:
            cluster.start_agents("hv1")
            sections = []
            for mode, title in MODES:
                say(f"timing {repeat} rounds: {title}")
                sections.append((title, measure(cluster, mode, Path(tmp) / "pycache", repeat)))
        finally:
            cluster.stop()
    print(render(sections, repeat, (load_start, load_averages())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
