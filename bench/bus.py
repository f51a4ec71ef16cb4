"""The bus benchmark: ping wall time, events per second into the master's bus, and memory.

    .venv/bin/python -m bench.bus [--agents 1,10,50] [--repeat 5] [--events 200000] [--quick]

For each N it starts a fresh master and N real agent processes on loopback
(tests/cluster.py; agents on libvirt's test:///default driver), accepts their
keys through the CLI (``saltmarsh key accept --all``), and measures:

- ping: wall time of the CLI process ``saltmarsh -c DIR run '*' test.ping``,
  the process start included; median of --repeat runs (min–max), timed only
  after every agent has answered once and after one untimed run; and the same
  for ``run 'hv*' test.ping``, a glob that names every agent (ids hv00, hv01,
  ...) and so takes the per-agent path (a job key wrapped for each agent, sent
  on each agent's topic; master/wire/publisher.py) where ``'*'`` goes once on
  broadcast. The two are run in turn, one of each per round;
- master CPU per ping: user + system seconds of the master process
  (/proc/<pid>/stat, clock ticks) from before to after each timed CLI run,
  the mean over the --repeat runs (one tick is 1/SC_CLK_TCK s, too coarse for
  a median), for each of the two targets; beside it the same from the
  nanosecond run times of the master's threads (/proc/<pid>/task/*/schedstat,
  summed; threads that end meanwhile are missed);
- events: ``test.fire_events count=K`` on every agent (K = events / N, each
  agent fires from a worker thread as fast as it can) while a MasterClient
  subscriber in this process counts the arrivals of that run's tag;
  rate = events received / (last arrival - job publish);
- memory: VmRSS of the master and of every agent process, after that work.

Salt's figures for the same work (shared/salt-figures.md) and our targets are
printed beside each figure. The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from saltmarsh.master.control.client import MasterClient
from saltmarsh.protocol.targeting import make_target
from tests.cluster import BIN, Cluster, wait_until

SALT_SOURCE = "Salt 3008.4, measured on a 2-core machine (shared/salt-figures.md)"
SALT_PING = {1: "0.68 s", 10: "0.87 s", 50: "3.15 s"}
SALT_EVENTS = "167–200 events/s"
SALT_MASTER_RSS = "870–910 MB (14 processes)"
SALT_AGENT_RSS = "117–122 MB (2 processes)"

TARGET_PING = ((1, 0.15), (10, 0.2), (50, 0.3))  # (up to N agents, seconds)
AGENT_PREFIX = "hv"
EVERYONE = "*"  # on broadcast, sealed with the session key
GLOB_ALL = f"{AGENT_PREFIX}*"  # every agent too, but per agent: a job key wrapped for each
TICKS = os.sysconf("SC_CLK_TCK")
TARGET_EVENTS = 20_000
TARGET_MASTER_MB = 80.0
TARGET_AGENT_MB = 40.0

HEADER = ("MEASURE", "N", "SALTMARSH", "TARGET", "MET", "SALT 3008.4 (2-core machine)")
EVENT_TAG = "bench/run"
PROBE_TAG = "bench/probe"
STARTUP_TIMEOUT = 240.0


def say(text: str) -> None:
    """Progress, on stderr so that stdout holds only the table."""
    print(f"[bench.bus] {text}", file=sys.stderr, flush=True)


def rss_mb(pid: int) -> float:
    """VmRSS of a process in MB (MiB), from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def thread_cpu_seconds(pid: int) -> float:
    """CPU time of a process's live threads so far, to the nanosecond (/proc/<pid>/task/*/schedstat)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            continue
    return total / 1e9


def pss_mb(pid: int) -> float:
    """Proportional set size in MB (shared library pages divided among their users), 0 if unknown."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class EventRun:
    """One burst of agent events into the master's bus."""

    expected: int
    received: int
    seconds: float
    relayed: int  # what the master's bus counted in the same window, less jobs' own events

    @property
    def rate(self) -> float:
        """Events received per second, from job publish to the last arrival."""
        return self.received / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Figures:
    """Everything measured for one number of agents."""

    agents: int
    ping_seconds: list[float] = field(default_factory=list)
    ping_cpu: list[float] = field(default_factory=list)  # master CPU seconds of each timed '*' ping
    glob_ping_seconds: list[float] = field(default_factory=list)  # the same for 'hv*'
    glob_ping_cpu: list[float] = field(default_factory=list)
    ping_cpu_ns: list[float] = field(default_factory=list)  # the same two from schedstat
    glob_ping_cpu_ns: list[float] = field(default_factory=list)
    events: list[EventRun] = field(default_factory=list)
    master_mb: float = 0.0
    master_pss_mb: float = 0.0
    agent_mb: list[float] = field(default_factory=list)
    agent_pss_mb: list[float] = field(default_factory=list)


class EventCounter(threading.Thread):
    """Counts events by tag on one subscription, in a thread of its own, until told how many."""

    def __init__(self, socket_path: Path, pattern: str, tag: str, expected: int, idle_timeout: float) -> None:
        super().__init__(name="event-counter", daemon=True)
        self._socket_path = socket_path
        self._pattern = pattern
        self._tag = tag
        self._expected = expected
        self._idle = idle_timeout
        self.probed = threading.Event()
        self.received = 0
        self.last_arrival = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with MasterClient(self._socket_path) as client:
                for event in client.events(self._pattern, idle_timeout=self._idle):
                    if event.tag == self._tag:
                        self.received += 1
                        self.last_arrival = time.perf_counter()
                        if self.received >= self._expected:
                            return
                    elif event.tag == PROBE_TAG:
                        self.probed.set()
        except BaseException as exc:  # reported by the main thread
            self.error = exc


class Bench:
    """One master and N agents, and the measurements made on them."""

    def __init__(self, base: Path, agents: int) -> None:
        self.cluster = Cluster(base, heartbeat_seconds=10.0, log_level="info")
        self.ids = [f"{AGENT_PREFIX}{i:02d}" for i in range(agents)]
        self.figures = Figures(agents)

    def start(self) -> None:
        """Start the master and the agents; accept every key through the CLI; wait for pings."""
        cluster = self.cluster
        cluster.start_master()
        for agent_id in self.ids:
            cluster.start_agent(agent_id, log_level="info")
        wait_until(lambda: set(self.ids) <= set(cluster.pending()), timeout=STARTUP_TIMEOUT, interval=0.5,
                   what=f"{len(self.ids)} agents' keys to be pending")
        cluster.cli("key", "accept", "--all")
        cluster.wait_answering(*self.ids, timeout=STARTUP_TIMEOUT)

    def stop(self) -> None:
        """Stop every daemon."""
        self.cluster.stop()

    def ping_command(self, target: str = EVERYONE) -> list[str]:
        """The exact command that is timed."""
        return [str(BIN / "saltmarsh"), "-c", str(self.cluster.master_dir), "run", target, "test.ping"]

    def time_ping(self, repeat: int) -> None:
        """Wall time of the CLI ping process and the master's CPU meanwhile, for '*' and 'hv*' in turn.

        One untimed run of each first.
        """
        master = self.cluster.master.proc
        assert master is not None
        f = self.figures
        series = ((EVERYONE, f.ping_seconds, f.ping_cpu, f.ping_cpu_ns),
                  (GLOB_ALL, f.glob_ping_seconds, f.glob_ping_cpu, f.glob_ping_cpu_ns))
        for i in range(repeat + 1):
            for target, walls, cpus, cpus_ns in series:
                command = self.ping_command(target)
                cpu_before, ns_before = cpu_seconds(master.pid), thread_cpu_seconds(master.pid)
                started = time.perf_counter()
                result = subprocess.run(command, capture_output=True, text=True, timeout=60)
                elapsed = time.perf_counter() - started
                cpu = cpu_seconds(master.pid) - cpu_before
                cpu_ns = thread_cpu_seconds(master.pid) - ns_before
                if result.returncode != 0:
                    raise RuntimeError(f"ping {target!r} exited {result.returncode}: {result.stderr}{result.stdout}")
                answered = result.stdout.count(":\n")
                if answered != len(self.ids):
                    raise RuntimeError(f"ping {target!r} printed {answered} answers, expected {len(self.ids)}:\n"
                                       f"{result.stdout}")
                if i:
                    walls.append(elapsed)
                    cpus.append(cpu)
                    cpus_ns.append(cpu_ns)

    def burst(self, total: int, run: int, idle_timeout: float) -> EventRun:
        """Every agent fires total/N events; count their arrival on a subscription."""
        per_agent = max(1, total // len(self.ids))
        expected = per_agent * len(self.ids)
        tag = f"{EVENT_TAG}{run}"
        counter = EventCounter(self.cluster.control_socket, "bench/", tag, expected, idle_timeout)
        counter.start()
        with MasterClient(self.cluster.control_socket, reply_timeout=30.0) as client:
            self._probe(client, counter)
            before = client.call("master.ping")["events"]
            started = time.perf_counter()
            outcome = client.run(make_target("*"), "test.fire_events", [], {"count": per_agent, "tag": tag}, 60.0)
            counter.join(timeout=idle_timeout + 600)
            after = client.call("master.ping")["events"]
        if counter.error is not None:
            raise RuntimeError(f"event subscriber failed: {counter.error!r}")
        if not outcome.complete or any(r["result"] != per_agent for r in outcome.returns.values()):
            raise RuntimeError(f"test.fire_events did not complete everywhere: {outcome}")
        relayed = after - before - 1 - len(self.ids)  # less the job's new event and its returns
        seconds = counter.last_arrival - started if counter.received else 0.0
        return EventRun(expected, counter.received, seconds, relayed)

    def _probe(self, client: MasterClient, counter: EventCounter) -> None:
        """Fire probe events until the counter's subscription sees one (it is then live)."""
        target = make_target(self.ids[0])
        deadline = time.monotonic() + 30
        while not counter.probed.is_set():
            if time.monotonic() > deadline or not counter.is_alive():
                raise RuntimeError(f"event subscription never saw a probe (error: {counter.error!r})")
            client.run(target, "event.send", [PROBE_TAG], {}, 5.0)
            counter.probed.wait(0.5)

    def measure_memory(self) -> None:
        """RSS of every daemon process, now."""
        master = self.cluster.master.proc
        assert master is not None
        self.figures.master_mb, self.figures.master_pss_mb = rss_mb(master.pid), pss_mb(master.pid)
        pids = [d.proc.pid for d in self.cluster.agents.values() if d.proc is not None]
        self.figures.agent_mb = [rss_mb(pid) for pid in pids]
        self.figures.agent_pss_mb = [pss_mb(pid) for pid in pids]


def measure(agents: int, args: argparse.Namespace) -> Figures:
    """All figures for one N, on a fresh master and fresh agents."""
    with tempfile.TemporaryDirectory(prefix=f"bench-bus-{agents}-") as tmp:
        bench = Bench(Path(tmp), agents)
        try:
            started = time.monotonic()
            say(f"N={agents}: starting a master and {agents} agent processes")
            bench.start()
            say(f"N={agents}: all agents answer ({time.monotonic() - started:.1f} s); timing ping x{args.repeat}")
            bench.time_ping(args.repeat)
            for run in range(args.event_runs):
                say(f"N={agents}: event burst {run + 1}/{args.event_runs} of {args.events:,} events")
                result = bench.burst(args.events, run, args.idle_timeout)
                say(f"N={agents}: {result.received:,}/{result.expected:,} events in {result.seconds:.2f} s "
                    f"= {result.rate:,.0f}/s (master bus relayed {result.relayed:,})")
                bench.figures.events.append(result)
            bench.measure_memory()
        except BaseException:
            bench.cluster.print_log_tails(daemons=4)
            raise
        finally:
            bench.stop()
    return bench.figures


# ---- the table ------------------------------------------------------------------------------


def ping_target(agents: int) -> float:
    """Our ping target for N agents (the target of the nearest listed N at or above it)."""
    for up_to, seconds in TARGET_PING:
        if agents <= up_to:
            return seconds
    return TARGET_PING[-1][1]


def met(ok: bool) -> str:
    """The MET column."""
    return "yes" if ok else "NO"


def rows_for(f: Figures) -> list[tuple[str, ...]]:
    """Table rows for one N (measure, N, ours, target, met, Salt)."""
    n = str(f.agents)
    rows: list[tuple[str, ...]] = []
    for pattern, walls, salt in ((EVERYONE, f.ping_seconds, SALT_PING.get(f.agents, "—")),
                                 (GLOB_ALL, f.glob_ping_seconds, "—")):
        if walls:
            median = statistics.median(walls)
            target = ping_target(f.agents)
            rows.append((f"ping: CLI `run '{pattern}' test.ping`", n,
                         f"{median:.3f} s ({min(walls):.3f}–{max(walls):.3f})",
                         f"≤ {target:g} s", met(median <= target), salt))
    for pattern, cpus, cpus_ns in ((EVERYONE, f.ping_cpu, f.ping_cpu_ns),
                                   (GLOB_ALL, f.glob_ping_cpu, f.glob_ping_cpu_ns)):
        if cpus:
            rows.append((f"master CPU per ping, `run '{pattern}'`", n,
                         f"{statistics.mean(cpus) * 1000:.1f} ms (mean of {len(cpus)}, ticks "
                         f"{min(cpus) * 1000:.0f}–{max(cpus) * 1000:.0f}; threads "
                         f"{statistics.median(cpus_ns) * 1000:.1f} ms median)", "—", "—", "—"))
    if f.events:
        mid = sorted(f.events, key=lambda e: e.rate)[len(f.events) // 2]  # the median run
        rates = [e.rate for e in f.events]
        spread = f", runs {min(rates):,.0f}–{max(rates):,.0f}" if len(rates) > 1 else ""
        lost = mid.expected - mid.received
        detail = f"{mid.received:,} in {mid.seconds:.2f} s{spread}" + (f", {lost:,} LOST" if lost else "")
        rows.append(("events into the master bus", n, f"{statistics.median(rates):,.0f} events/s ({detail})",
                     f"≥ {TARGET_EVENTS:,}/s", met(statistics.median(rates) >= TARGET_EVENTS and not lost),
                     SALT_EVENTS))
    if f.master_mb:
        rows.append(("master RSS", n, f"{f.master_mb:.1f} MB (1 process; PSS {f.master_pss_mb:.1f})",
                     f"≤ {TARGET_MASTER_MB:g} MB", met(f.master_mb <= TARGET_MASTER_MB), SALT_MASTER_RSS))
    if f.agent_mb:
        worst = max(f.agent_mb)
        rows.append(("agent RSS, per agent", n,
                     f"{worst:.1f} MB max, {statistics.mean(f.agent_mb):.1f} mean "
                     f"(1 process; PSS {statistics.mean(f.agent_pss_mb):.1f})",
                     f"≤ {TARGET_AGENT_MB:g} MB", met(worst <= TARGET_AGENT_MB), SALT_AGENT_RSS))
    return rows


def render(figures: list[Figures], args: argparse.Namespace) -> str:
    """The whole table, grouped by measure, with the conditions above it and the source below."""
    by_measure: dict[str, list[tuple[str, ...]]] = {}
    for f in figures:
        for row in rows_for(f):
            by_measure.setdefault(row[0], []).append(row)
    rows: list[tuple[str, ...]] = [HEADER]
    for group in by_measure.values():
        rows.extend((row[0] if i == 0 else "", *row[1:]) for i, row in enumerate(group))
    widths = [max(len(r[c]) for r in rows) for c in range(len(HEADER))]

    def line(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1])]
        cells += [c.ljust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
        return "  ".join(cells).rstrip()

    out = [
        "saltmarsh bus benchmark: one master and N agent processes on loopback, agents on test:///default",
        f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} at the end",
        f"ping: median of {args.repeat} (min–max), CLI process start included; '{GLOB_ALL}' names every agent "
        f"but takes the per-agent path (job key wrapped per agent), '*' the broadcast; master CPU: /proc/<pid>/stat "
        f"utime+stime around each timed ping, 1/{TICKS} s ticks; threads: task/*/schedstat, ns",
        f"events: {args.events:,} in total per N, from test.fire_events on every agent, median of "
        f"{args.event_runs} run(s); RSS after that work",
        "",
        line(rows[0]),
        "  ".join("-" * w for w in widths),
        *(line(r) for r in rows[1:]),
        "",
        f"Salt's figures: {SALT_SOURCE}.",
    ]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; --quick is a smoke run with few agents and events."""
    parser = argparse.ArgumentParser(prog="python -m bench.bus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="1,10,50", help="comma-separated numbers of agents (default 1,10,50)")
    parser.add_argument("--repeat", type=int, default=5, help="timed ping runs per N (default 5)")
    parser.add_argument("--events", type=int, default=200_000, help="events per burst, over all agents")
    parser.add_argument("--event-runs", type=int, default=3, help="event bursts per N, median rate (default 3)")
    parser.add_argument("--idle-timeout", type=float, default=10.0,
                        help="a burst ends after this many seconds without an event (default 10)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=1,3, 3 pings, 6,000 events")
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.repeat, args.events, args.idle_timeout = "1,3", 3, 6_000, 5.0
    try:
        args.agent_counts = [int(a) for a in args.agents.split(",") if a.strip()]
    except ValueError:
        parser.error(f"--agents takes numbers separated by commas, not {args.agents!r}")
    if not args.agent_counts or min(args.agent_counts) < 1 or args.repeat < 1 or args.events < 1:
        parser.error("--agents, --repeat and --events must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure every N, then print the table."""
    args = parse_args(argv)
    figures = [measure(n, args) for n in args.agent_counts]
    print(render(figures, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
