"""The swarm benchmark: one real master against 100, 500 and 1,000 agents on this machine.

    .venv/bin/python -m bench.swarm [--agents 100,500,1000] [--processes 4] [--repeat 5] [--events 100000]

The agents are the real agent code in swarm mode (agent/swarm.py): each has
its own id, Ed25519 key and connections; a few processes hold them. For each N
it starts a fresh master (heartbeats every 10 s, log level info) and the
swarm, accepts the keys with ``saltmarsh key accept --all``, and measures:

- ping: wall time of the CLI process ``saltmarsh run '*' test.ping`` (process
  start included), median of --repeat runs after one untimed run; and the same
  for ``run 'sw-*' test.ping``, a glob that names every member (ids sw-00000,
  sw-00001, ...) and so takes the per-agent path (a job key wrapped for each
  agent, sent on each agent's topic; master/publisher.py) where ``'*'`` goes
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
  how many agents re-authenticated (hellos counted by the master);
- reconnect: the master is stopped (SIGTERM) and started again; timed from
  the new master process's start until ``'*' test.ping`` is answered by all
  (probing with pings that wait at most RECONNECT_PROBE_TIMEOUT each).

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

from bench.bus import PROBE_TAG, TICKS, EventCounter, cpu_seconds, rss_mb
from saltmarsh.master.client import MasterClient
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
    """Everything measured for one number of agents."""

    agents: int
    ping_seconds: list[float] = field(default_factory=list)
    ping_cpu: list[float] = field(default_factory=list)
    ping_peak: float = 0.0
    glob_ping_seconds: list[float] = field(default_factory=list)  # the same three for 'sw-*'
    glob_ping_cpu: list[float] = field(default_factory=list)
    glob_ping_peak: float = 0.0
    events_per_second: float = 0.0
    master_mb: float = 0.0
    swarm_mb: float = 0.0
    rotation_seconds: float = 0.0
    rotation_peak: float = 0.0
    rotation_hellos: int = 0
    reconnect_seconds: float = 0.0


class SwarmBench:
    """One master and N swarm agents in P processes, and the measurements made on them."""

    def __init__(self, base: Path, agents: int, processes: int) -> None:
        self.cluster = Cluster(base, heartbeat_seconds=10.0, log_level="info")
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
                                          request_timeout_seconds=10.0, auth_retry_seconds=2.0)
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
        """Stop the master, start it again, time until every agent answers a ping."""
        cluster = self.cluster
        cluster.master.stop()
        started = time.perf_counter()
        cluster.start_master()
        deadline = started + 120.0
        while time.perf_counter() < deadline:
            if self.answering(RECONNECT_PROBE_TIMEOUT) == self.agents:
                self.figures.reconnect_seconds = time.perf_counter() - started
                return
        raise RuntimeError("not every agent answered within 120 s of the master's restart")

    def measure(self, repeat: int, events: int) -> Figures:
        """Every figure for this N."""
        say(f"N={self.agents}: ping x{repeat}")
        self.time_ping(repeat)
        say(f"N={self.agents}: events")
        self.burst(events)
        self.figures.master_mb = rss_mb(self.master_pid)
        self.figures.swarm_mb = sum(rss_mb(d.proc.pid) for d in self.swarms if d.proc is not None)
        say(f"N={self.agents}: key rotation")
        self.rotate()
        say(f"N={self.agents}: master restart")
        self.restart_master()
        return self.figures


def _probe(client: MasterClient, counter: EventCounter) -> bool:
    """Have one agent fire a probe event; True once the counter's subscription has seen one."""
    client.run(make_target(f"{SWARM_ID}-00000"), "event.send", [PROBE_TAG], {}, 5.0)
    return counter.probed.wait(0.5)


def report(all_figures: list[Figures], processes: int) -> None:
    """Print the table."""
    rows = [("MEASURE", "N", "SALTMARSH", "TARGET", "MET")]
    for f in all_figures:
        n = str(f.agents)
        ping = statistics.median(f.ping_seconds)
        glob_ping = statistics.median(f.glob_ping_seconds)
        rows += [
            ("'*' test.ping (CLI wall, median)", n,
             f"{ping:.3f} s ({min(f.ping_seconds):.3f}–{max(f.ping_seconds):.3f})",
             f"<= {TARGET_PING_1000} s at 1000" if f.agents >= 1000 else "-",
             _met(ping <= TARGET_PING_1000) if f.agents >= 1000 else "-"),
            (f"'{GLOB_ALL}' test.ping, per agent (CLI wall, median)", n,
             f"{glob_ping:.3f} s ({min(f.glob_ping_seconds):.3f}–{max(f.glob_ping_seconds):.3f})",
             f"<= {TARGET_PING_1000} s at 1000" if f.agents >= 1000 else "-",
             _met(glob_ping <= TARGET_PING_1000) if f.agents >= 1000 else "-"),
            ("master CPU per ping (peak)", n, f"{statistics.median(f.ping_cpu):.2f} s ({f.ping_peak:.0%})", "-", "-"),
            (f"master CPU per ping, '{GLOB_ALL}' (peak)", n,
             f"{statistics.median(f.glob_ping_cpu):.2f} s ({f.glob_ping_peak:.0%})", "-", "-"),
            ("events/s into the bus", n, f"{f.events_per_second:,.0f}", "-", "-"),
            ("master RSS", n, f"{f.master_mb:.1f} MB", f"<= {TARGET_MASTER_MB:.0f} MB at 1000",
             _met(f.master_mb <= TARGET_MASTER_MB) if f.agents >= 1000 else "-"),
            (f"swarm RSS ({processes} processes)", n, f"{f.swarm_mb:.0f} MB ({f.swarm_mb / f.agents:.2f} MB/agent)",
             "-", "-"),
            ("key delete -> all N-1 answer a new-key job", n, f"{f.rotation_seconds:.2f} s", "-", "-"),
            ("  master peak CPU meanwhile / re-auths", n, f"{f.rotation_peak:.0%} / {f.rotation_hellos} hellos",
             "no storm", _met(f.rotation_hellos <= 1)),
            ("master restart -> all N answer", n, f"{f.reconnect_seconds:.2f} s", f"<= {TARGET_RECONNECT:.0f} s",
             _met(f.reconnect_seconds <= TARGET_RECONNECT)),
        ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="100,500,1000", help="comma-separated numbers of agents")
    parser.add_argument("--processes", type=int, default=4, help="swarm processes holding the agents")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--events", type=int, default=100_000, help="events fired in all, per N")
    args = parser.parse_args(argv)
    results = []
    for n in (int(x) for x in args.agents.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"swarm{n}-") as tmp:
            bench = SwarmBench(Path(tmp), n, args.processes)
            try:
                say(f"N={n}: starting the master and {bench.processes} swarm processes")
                bench.start()
                results.append(bench.measure(args.repeat, args.events))
            finally:
                bench.stop()
    print(f"bench.swarm on {os.cpu_count()} cores, {args.processes} swarm processes, "
          f"load average {os.getloadavg()[0]:.2f} at the end; master CPU in 1/{TICKS} s ticks")
    report(results, args.processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
