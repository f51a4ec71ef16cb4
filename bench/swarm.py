"""The swarm benchmark: one real master against 100, 500 and 1,000 agents on this machine.

    .venv/bin/python -m bench.swarm [--agents 100,500,1000] [--processes 4] [--repeat 5] [--events 100000]
                                    [--busy N]

The agents are the real agent code in swarm mode (agent/swarm.py): each has
its own id, Ed25519 key and connections; a few processes hold them. For each N
it starts a fresh master (heartbeats every 10 s, log level info) and the
swarm, accepts the keys with ``saltmarsh key accept --all``, and measures:

- ping: wall time of the CLI process ``saltmarsh run '*' test.ping`` (process
  start included), median of --repeat runs after one untimed run; and the same
  for ``run 'sw-*' test.ping``, a glob that names every member (ids sw-00000,
  sw-00001, ...) and so takes the per-agent path (a job key wrapped for each
  agent, sent on each agent's topic; master/wire/publisher.py) where ``'*'`` goes
  once on broadcast. The two are run in turn, one of each per round;
- events: ``test.fire_events`` on every agent, counted on a subscription
  (as bench/bus.py does), events received per second;
- master RSS after that work, and the master's CPU: seconds used per ping
  (/proc/<pid>/stat utime+stime before and after each timed ping, median) and
  its peak (sampled every 0.1 s, 100 % = one core), for each of the two targets;
- key rotation: ``saltmarsh key delete`` of one member rotates the publish
  session key; the new key is pushed to every other agent over its own
  channel. Timed: from the delete until a ``'*' test.ping`` sealed with the
  new key is answered by all N-1; also the master's peak CPU meanwhile and
  how many agents re-authenticated (hellos counted by the master; the deleted
  member's own resubmissions, one per jittered auth retry, are no storm);
- reconnect: the master is stopped (SIGTERM) and started again; timed from
  the new master process's start until ``'*' test.ping`` is answered by all
  (probing with pings that wait at most RECONNECT_PROBE_TIMEOUT each); beside
  it, when every agent was up again in the master's presence (``saltmarsh/agent/*/up``
  events, from a subscription opened as soon as the new master answers) and how
  many inventory resyncs that took (``master.ping``'s ``resync`` counters).

``--busy N`` runs N busy-loop processes beside it all (started before the master,
ended after the last figure), so that a run shows what a loaded host does; the
load average is printed at the start and end of each N. A stage that fails
ends that N, and the table still shows every figure measured before it, with
the failure below the table (exit status 1).

Targets (issue 6): 1,000 agents answer the ping in <= 1.5 s; master <= 150 MB
RSS at 1,000 agents; all reconnected <= 10 s after a master restart. Salt
publishes no figure at this scale for this machine (shared/salt-figures.md
stops at 50 minions). The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.bus import PROBE_TAG, TICKS, EventCounter, cpu_seconds, rss_mb
from saltmarsh.agent.backoff import JITTER
from saltmarsh.master.control.client import MasterClient
from saltmarsh.protocol.targeting import make_target
from tests.cluster import BIN, Cluster, Daemon, wait_until

TARGET_PING_1000 = 1.5
TARGET_MASTER_MB = 150.0
TARGET_RECONNECT = 10.0
SWARM_ID = "sw"
EVERYONE = "*"  # on broadcast, sealed with the session key
GLOB_ALL = f"{SWARM_ID}-*"  # every member too (agent/swarm.py member_id), but a job key wrapped per agent
EVENT_TAG = "bench/swarm"
STARTUP_TIMEOUT = 600.0
# Each probe after a master restart is a ping that waits this long for everyone: the
# reconnection time is known to within it (a 1,000-agent ping takes about 0.6 s).
RECONNECT_PROBE_TIMEOUT = 2.0
RECONNECT_DEADLINE = 120.0
AUTH_RETRY = 2.0  # the swarm's auth_retry_seconds


def no_storm(hellos: int, seconds: float) -> bool:
    """At most the deleted member's own submissions: its first, then one per shortest jittered retry."""
    return hellos <= 1 + int(seconds / (AUTH_RETRY * (1.0 - JITTER)))


def say(text: str) -> None:
    """Progress, on stderr so that stdout holds only the table."""
    print(f"[bench.swarm] {text}", file=sys.stderr, flush=True)


class CpuSampler(threading.Thread):
    """Samples a process's CPU use every ``interval`` seconds; ``peak`` is the highest share of one core."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(name="cpu-sampler", daemon=True)
        self._pid = pid
        self._interval = interval
        self._done = threading.Event()
        self.peak = 0.0
        self.used = 0.0

    def run(self) -> None:
        first = last = cpu_seconds(self._pid)
        last_t = time.perf_counter()
        while not self._done.wait(self._interval):
            now, now_t = cpu_seconds(self._pid), time.perf_counter()
            self.peak = max(self.peak, (now - last) / (now_t - last_t))
            last, last_t = now, now_t
        self.used = cpu_seconds(self._pid) - first

    def stop(self) -> None:
        """Stop sampling (and wait for the last sample)."""
        self._done.set()
        self.join()


@dataclass
class Figures:
    """Everything measured for one number of agents; None (or empty) where a stage did not get to it."""

    agents: int
    ping_seconds: list[float] = field(default_factory=list)
    ping_cpu: list[float] = field(default_factory=list)
    ping_peak: float = 0.0
    glob_ping_seconds: list[float] = field(default_factory=list)  # the same three for 'sw-*'
    glob_ping_cpu: list[float] = field(default_factory=list)
    glob_ping_peak: float = 0.0
    events_per_second: float | None = None
    master_mb: float | None = None
    swarm_mb: float | None = None
    rotation_seconds: float | None = None
    rotation_peak: float = 0.0
    rotation_hellos: int = 0
    reconnect_seconds: float | None = None
    reconnect_answered: int | None = None  # how many answered the last probe (all, unless the stage failed)
    reconnect_up_seconds: float | None = None  # every agent up in the new master's presence
    resyncs: dict[str, int] = field(default_factory=dict)  # master.ping's resync counters after the restart
    load: list[float] = field(default_factory=list)  # 1-minute load average at the start and the end
    failure: str = ""  # "<stage>: <error>" of the stage that ended this N, if one did


class BusyLoad:
    """N busy-loop processes beside the benchmark, so that it runs on a loaded host (``--busy N``)."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> BusyLoad:
        for _ in range(self._count):
            self._processes.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self._processes:
            process.kill()
            process.wait()


class SwarmBench:
    """One master and N swarm agents in P processes, and the measurements made on them."""

    def __init__(self, base: Path, agents: int, processes: int, master_settings: dict[str, Any] | None = None,
                 agent_settings: dict[str, Any] | None = None) -> None:
        self.cluster = Cluster(base, heartbeat_seconds=10.0, log_level="info", **(master_settings or {}))
        self.agent_settings = agent_settings or {}
        self.agents = agents
        self.processes = min(processes, agents)
        self.swarms: list[Daemon] = []
        self.figures = Figures(agents)

    @property
    def master_pid(self) -> int:
        """The running master's pid."""
        process = self.cluster.master.proc
        assert process is not None
        return process.pid

    def start(self) -> None:
        """Master, swarm processes, keys accepted, every agent answering."""
        cluster = self.cluster
        cluster.start_master()
        config_dir = cluster.agent_config(SWARM_ID, log_level="warning", worker_threads=4,
                                          request_timeout_seconds=10.0, auth_retry_seconds=AUTH_RETRY,
                                          **self.agent_settings)
        share, extra = divmod(self.agents, self.processes)
        first = 0
        for index in range(self.processes):
            count = share + (1 if index < extra else 0)
            daemon = Daemon(f"swarm{index}", config_dir, [
                str(BIN / "python"), "-m", "saltmarsh.agent.swarm", "-c", str(config_dir),
                "--count", str(count), "--first", str(first),
            ])
            daemon.start()
            self.swarms.append(daemon)
            first += count
        wait_until(lambda: len(cluster.pending()) >= self.agents, timeout=STARTUP_TIMEOUT, interval=1.0,
                   what=f"{self.agents} keys to be pending")
        cluster.cli("key", "accept", "--all")
        wait_until(lambda: self.answering(20.0) == self.agents, timeout=STARTUP_TIMEOUT, interval=1.0,
                   what=f"all {self.agents} agents to answer")

    def stop(self) -> None:
        """Stop the swarm processes and the master."""
        for daemon in self.swarms:
            if daemon.alive():
                daemon.stop()
        self.cluster.stop()

    def ping(self, timeout: float = 30.0, target: str = EVERYONE) -> subprocess.CompletedProcess[str]:
        """Run the timed command once: ``saltmarsh run TARGET test.ping --json``."""
        return subprocess.run(
            [str(BIN / "saltmarsh"), "-c", str(self.cluster.master_dir), "run", "--timeout", str(timeout),
             "--json", target, "test.ping"],
            capture_output=True, text=True, timeout=timeout + 30,
        )

    def answering(self, timeout: float) -> int:
        """How many agents answer one ping."""
        result = self.ping(timeout)
        return result.stdout.count('": true')

    def time_ping(self, repeat: int) -> None:
        """Wall time and master CPU of the CLI ping, for '*' and 'sw-*' in turn, after one untimed run of each."""
        figures = self.figures
        peaks = {EVERYONE: 0.0, GLOB_ALL: 0.0}
        series = ((EVERYONE, figures.ping_seconds, figures.ping_cpu),
                  (GLOB_ALL, figures.glob_ping_seconds, figures.glob_ping_cpu))
        for i in range(repeat + 1):
            for target, walls, cpus in series:
                sampler = CpuSampler(self.master_pid)
                sampler.start()
                started = time.perf_counter()
                result = self.ping(target=target)
                elapsed = time.perf_counter() - started
                sampler.stop()
                answered = result.stdout.count('": true')
                if result.returncode != 0 or answered != self.agents:
                    raise RuntimeError(f"ping {target!r}: {answered}/{self.agents} answered, exit "
                                       f"{result.returncode}: {result.stderr[-2000:]}")
                if i:
                    walls.append(elapsed)
                    cpus.append(sampler.used)
                    peaks[target] = max(peaks[target], sampler.peak)
        figures.ping_peak, figures.glob_ping_peak = peaks[EVERYONE], peaks[GLOB_ALL]

    def burst(self, total: int) -> None:
        """Every agent fires total/N events; events received per second on a subscription."""
        per_agent = max(1, total // self.agents)
        expected = per_agent * self.agents
        counter = EventCounter(self.cluster.control_socket, "bench/", EVENT_TAG, expected, 30.0)
        counter.start()
        with MasterClient(self.cluster.control_socket, reply_timeout=60.0) as client:
            wait_until(lambda: _probe(client, counter), timeout=30.0, what="the event counter")
            started = time.perf_counter()
            outcome = client.run(make_target("*"), "test.fire_events", [], {"count": per_agent, "tag": EVENT_TAG},
                                 120.0)
            counter.join(timeout=600)
        if counter.error is not None:
            raise RuntimeError(f"event subscriber failed: {counter.error!r}")
        if not outcome.complete:
            raise RuntimeError(f"test.fire_events answered by {len(outcome.returns)}/{self.agents}")
        if counter.received < expected:
            say(f"only {counter.received} of {expected} events arrived")
        self.figures.events_per_second = counter.received / (counter.last_arrival - started)

    def rotate(self) -> None:
        """Delete one member's key and time until every other agent answers a job sealed with the new key."""
        victim = f"{SWARM_ID}-00000"
        with MasterClient(self.cluster.control_socket) as client:
            hellos_before = client.call("master.ping")["requests"].get("hello", 0)
        sampler = CpuSampler(self.master_pid, interval=0.05)
        sampler.start()
        started = time.perf_counter()
        self.cluster.cli("key", "delete", victim)
        result = self.ping()
        elapsed = time.perf_counter() - started
        sampler.stop()
        answered = result.stdout.count('": true')
        if answered != self.agents - 1:
            raise RuntimeError(f"after the rotation {answered}/{self.agents - 1} answered: {result.stderr[-2000:]}")
        with MasterClient(self.cluster.control_socket) as client:
            hellos = client.call("master.ping")["requests"].get("hello", 0) - hellos_before
        self.figures.rotation_seconds = elapsed
        self.figures.rotation_peak = sampler.peak
        self.figures.rotation_hellos = hellos  # the deleted member submitting its key again counts here
        # Let the deleted member back in so that later figures count all N.
        wait_until(lambda: victim in self.cluster.pending(), timeout=60.0, what=f"{victim} to resubmit")
        self.cluster.cli("key", "accept", victim)
        wait_until(lambda: self.answering(20.0) == self.agents, timeout=120.0, what="all agents after rotation")

    def restart_master(self) -> None:
        """Stop the master, start it again, time until every agent answers a ping (and is up)."""
        cluster = self.cluster
        cluster.master.stop()
        started = time.perf_counter()
        cluster.start_master()
        watcher = PresenceWatcher(cluster.control_socket, self.agents, started)
        watcher.start()
        try:
            deadline = started + RECONNECT_DEADLINE
            answered = 0
            while time.perf_counter() < deadline:
                answered = self.answering(RECONNECT_PROBE_TIMEOUT)
                self.figures.reconnect_answered = answered
                if answered == self.agents:
                    self.figures.reconnect_seconds = time.perf_counter() - started
                    break
            else:
                raise RuntimeError(f"{answered} of {self.agents} agents answered the last probe, "
                                   f"{RECONNECT_DEADLINE:.0f} s after the master's restart")
        finally:
            watcher.stop()
            self.figures.reconnect_up_seconds = watcher.all_up
            self.figures.resyncs = watcher.resyncs

    def measure(self, repeat: int, events: int) -> Figures:
        """Every figure for this N, stage by stage; a stage that fails ends the run with what it has."""
        n = self.agents
        stages = [
            (f"ping x{repeat}", lambda: self.time_ping(repeat)),
            ("events", lambda: self.burst(events)),
            ("RSS", self.sizes),
            ("key rotation", self.rotate),
            ("master restart", self.restart_master),
        ]
        for name, stage in stages:
            say(f"N={n}: {name}")
            try:
                stage()
            except Exception as exc:  # reported below the table, beside what was measured
                self.figures.failure = f"{name}: {exc}"
                say(f"N={n}: {name} failed: {exc}")
                break
        return self.figures

    def sizes(self) -> None:
        """Master and swarm RSS, after the pings and the events."""
        self.figures.master_mb = rss_mb(self.master_pid)
        self.figures.swarm_mb = sum(rss_mb(d.proc.pid) for d in self.swarms if d.proc is not None)


class PresenceWatcher(threading.Thread):
    """Polls a restarted master's ``master.ping``: when every agent was up, and the resyncs that took."""

    def __init__(self, control_socket: Path, agents: int, started: float, interval: float = 0.1) -> None:
        super().__init__(name="presence-watcher", daemon=True)
        self._socket = control_socket
        self._agents = agents
        self._since = started
        self._interval = interval
        self._done = threading.Event()
        self.all_up: float | None = None
        self.resyncs: dict[str, int] = {}

    def run(self) -> None:
        with MasterClient(self._socket) as client:
            while True:
                last = self._done.is_set()  # one more look after stop(): the final counters
                try:
                    status = client.call("master.ping")
                except Exception as exc:  # a busy master may not answer a look; the next one counts
                    say(f"master.ping during the reconnection: {exc}")
                else:
                    self._look(status)
                if last:
                    return
                self._done.wait(self._interval)

    def _look(self, status: dict[str, Any]) -> None:
        self.resyncs = dict(status.get("resync", {}))
        if self.all_up is None and status.get("up", 0) >= self._agents:
            self.all_up = time.perf_counter() - self._since

    def stop(self) -> None:
        """Take the last look and end."""
        self._done.set()
        self.join(timeout=30)


def _probe(client: MasterClient, counter: EventCounter) -> bool:
    """Have one agent fire a probe event; True once the counter's subscription has seen one."""
    client.run(make_target(f"{SWARM_ID}-00000"), "event.send", [PROBE_TAG], {}, 5.0)
    return counter.probed.wait(0.5)


def report(all_figures: list[Figures], processes: int) -> None:
    """Print the table: every figure measured, "not measured" where a failed stage left none."""
    rows = [("MEASURE", "N", "SALTMARSH", "TARGET", "MET")]
    for f in all_figures:
        rows += _rows(f, processes)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for f in all_figures:
        load = " -> ".join(f"{x:.2f}" for x in f.load)
        print(f"N={f.agents}: load average {load}" + (f"; stopped at {f.failure}" if f.failure else ""))


NOT_MEASURED = "not measured"


def _rows(f: Figures, processes: int) -> list[tuple[str, str, str, str, str]]:
    n = str(f.agents)
    at_1000 = f.agents >= 1000
    ping_target = f"<= {TARGET_PING_1000} s at 1000" if at_1000 else "-"

    def median_of(values: list[float], unit: str = "s") -> tuple[str, float | None]:
        if not values:
            return NOT_MEASURED, None
        mid = statistics.median(values)
        return f"{mid:.3f} {unit} ({min(values):.3f}–{max(values):.3f})", mid

    def met(ok: bool | None, applies: bool = True) -> str:
        return "-" if ok is None or not applies else _met(ok)

    ping, ping_mid = median_of(f.ping_seconds)
    glob_ping, glob_mid = median_of(f.glob_ping_seconds)
    cpu = f"{statistics.median(f.ping_cpu):.2f} s ({f.ping_peak:.0%})" if f.ping_cpu else NOT_MEASURED
    glob_cpu = (f"{statistics.median(f.glob_ping_cpu):.2f} s ({f.glob_ping_peak:.0%})" if f.glob_ping_cpu
                else NOT_MEASURED)
    rotation = NOT_MEASURED if f.rotation_seconds is None else f"{f.rotation_seconds:.2f} s"
    reauths = (NOT_MEASURED if f.rotation_seconds is None
               else f"{f.rotation_peak:.0%} / {f.rotation_hellos} hellos")
    return [
        ("'*' test.ping (CLI wall, median)", n, ping, ping_target,
         met(None if ping_mid is None else ping_mid <= TARGET_PING_1000, at_1000)),
        (f"'{GLOB_ALL}' test.ping, per agent (CLI wall, median)", n, glob_ping, ping_target,
         met(None if glob_mid is None else glob_mid <= TARGET_PING_1000, at_1000)),
        ("master CPU per ping (peak)", n, cpu, "-", "-"),
        (f"master CPU per ping, '{GLOB_ALL}' (peak)", n, glob_cpu, "-", "-"),
        ("events/s into the bus", n, _value(f.events_per_second, "{:,.0f}"), "-", "-"),
        ("master RSS", n, _value(f.master_mb, "{:.1f} MB"), f"<= {TARGET_MASTER_MB:.0f} MB at 1000",
         met(None if f.master_mb is None else f.master_mb <= TARGET_MASTER_MB, at_1000)),
        (f"swarm RSS ({processes} processes)", n,
         NOT_MEASURED if f.swarm_mb is None else f"{f.swarm_mb:.0f} MB ({f.swarm_mb / f.agents:.2f} MB/agent)",
         "-", "-"),
        ("key delete -> all N-1 answer a new-key job", n, rotation, "-", "-"),
        ("  master peak CPU meanwhile / re-auths", n, reauths, "no storm",
         met(None if f.rotation_seconds is None else no_storm(f.rotation_hellos, f.rotation_seconds))),
        ("master restart -> all N answer", n, _reconnect(f), f"<= {TARGET_RECONNECT:.0f} s",
         met(None if f.reconnect_seconds is None else f.reconnect_seconds <= TARGET_RECONNECT)),
        ("  all N up in the master's presence", n, _value(f.reconnect_up_seconds, "{:.2f} s"), "-", "-"),
        ("  inventory resyncs after the restart", n,
         ", ".join(f"{k} {v}" for k, v in sorted(f.resyncs.items())) or NOT_MEASURED, "-", "-"),
    ]


def _value(value: float | None, form: str) -> str:
    return NOT_MEASURED if value is None else form.format(value)


def _reconnect(f: Figures) -> str:
    if f.reconnect_seconds is not None:
        return f"{f.reconnect_seconds:.2f} s"
    if f.reconnect_answered is not None:
        return f"not all within {RECONNECT_DEADLINE:.0f} s ({f.reconnect_answered}/{f.agents} answered)"
    return NOT_MEASURED


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table (exit status 1 if a stage failed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="100,500,1000", help="comma-separated numbers of agents")
    parser.add_argument("--processes", type=int, default=4, help="swarm processes holding the agents")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--events", type=int, default=100_000, help="events fired in all, per N")
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes run beside the benchmark")
    args = parser.parse_args(argv)
    results = []
    with BusyLoad(args.busy):
        for n in (int(x) for x in args.agents.split(",")):
            results.append(run_one(n, args))
    print(f"bench.swarm on {os.cpu_count()} cores, {args.processes} swarm processes, {args.busy} busy-loop "
          f"processes beside it; master CPU in 1/{TICKS} s ticks")
    report(results, args.processes)
    return 1 if any(f.failure for f in results) else 0


def run_one(n: int, args: argparse.Namespace) -> Figures:
    """Every figure for N agents, in a directory of their own; what was measured even if a stage failed."""
    with tempfile.TemporaryDirectory(prefix=f"swarm{n}-") as tmp:
        bench = SwarmBench(Path(tmp), n, args.processes)
        bench.figures.load.append(os.getloadavg()[0])
        try:
            say(f"N={n}: starting the master and {bench.processes} swarm processes")
            try:
                bench.start()
            except Exception as exc:  # reported below the table like any failed stage
                bench.figures.failure = f"start: {exc}"
                say(f"N={n}: start failed: {exc}")
            else:
                bench.measure(args.repeat, args.events)
        finally:
            bench.stop()
            bench.figures.load.append(os.getloadavg()[0])
    return bench.figures


if __name__ == "__main__":
    sys.exit(main())
