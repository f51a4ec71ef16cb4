"""The soak benchmark: jobs and events at a steady rate for minutes; is memory flat?

    .venv/bin/python -m bench.soak [--agents 50] [--minutes 10] [--jobs-per-second 2] [--events-per-second 1000]

A fresh master and N real agent processes (tests/cluster.py, libvirt's
test:///default driver). Every second the load loop publishes ``'*'
test.ping`` and ``'*' test.fire_events`` (events-per-second / N events on each
agent) and waits for both, so the rate stays steady rather than piling up;
jobs beyond those two per second are further pings. Each --sample-seconds
(default 60) it prints the master's RSS and the agents' RSS (median and
largest). At the end it prints the slope of each series, fitted by least
squares over the samples after the first (warm-up), in MB per minute. Flat
memory means a slope near zero; the whole table goes to stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.bus import rss_mb
from saltmarsh.master.control.client import MasterClient
from saltmarsh.protocol.messages import Target
from saltmarsh.protocol.targeting import make_target
from tests.cluster import Cluster, wait_until

STARTUP_TIMEOUT = 300.0
EVENT_TAG = "bench/soak"


def say(text: str) -> None:
    """Progress, on stderr."""
    print(f"[bench.soak] {text}", file=sys.stderr, flush=True)


@dataclass
class Sample:
    """Memory at one moment of the run."""

    minute: float
    master_mb: float
    agent_median_mb: float
    agent_max_mb: float
    jobs: int
    events: int


@dataclass
class Soak:
    """The running cluster and what has been measured on it."""

    cluster: Cluster
    ids: list[str]
    samples: list[Sample] = field(default_factory=list)
    jobs: int = 0
    events: int = 0
    late_seconds: float = 0.0  # load-loop time spent beyond its one-second budget

    def start(self) -> None:
        """Master and agents up, keys accepted, everyone answering."""
        self.cluster.start_master()
        for agent_id in self.ids:
            self.cluster.start_agent(agent_id, log_level="info")
        wait_until(lambda: set(self.ids) <= set(self.cluster.pending()), timeout=STARTUP_TIMEOUT, interval=0.5,
                   what="every agent's key to be pending")
        self.cluster.cli("key", "accept", "--all")
        self.cluster.wait_answering(*self.ids, timeout=STARTUP_TIMEOUT)

    def sample(self, started: float) -> Sample:
        """Record and print the memory of every daemon now."""
        master = self.cluster.master.proc
        assert master is not None
        agents = [rss_mb(d.proc.pid) for d in self.cluster.agents.values() if d.proc is not None]
        sample = Sample((time.monotonic() - started) / 60, rss_mb(master.pid), statistics.median(agents),
                        max(agents), self.jobs, self.events)
        self.samples.append(sample)
        print(f"{sample.minute:6.1f}  {sample.master_mb:9.1f}  {sample.agent_median_mb:12.1f}  "
              f"{sample.agent_max_mb:9.1f}  {sample.jobs:7d}  {sample.events:9d}", flush=True)
        return sample

    def run(self, seconds: float, jobs_per_second: int, events_per_second: int, sample_seconds: float) -> None:
        """The load loop: one round a second, a memory sample every ``sample_seconds``."""
        per_agent = max(1, events_per_second // len(self.ids))
        everyone = make_target("*")
        print("MINUTE  MASTER MB  AGENT MB MED  AGENT MAX  JOBS     EVENTS", flush=True)
        started = time.monotonic()
        next_sample = started
        with MasterClient(self.cluster.control_socket, reply_timeout=60.0) as client:
            while (now := time.monotonic()) - started < seconds:
                if now >= next_sample:
                    self.sample(started)
                    next_sample += sample_seconds
                self._round(client, everyone, jobs_per_second, per_agent)
                spare = 1.0 - (time.monotonic() - now)
                if spare > 0:
                    time.sleep(spare)
                else:
                    self.late_seconds -= spare
        self.sample(started)

    def _round(self, client: MasterClient, everyone: Target, jobs: int, per_agent: int) -> None:
        outcome = client.run(everyone, "test.fire_events", [], {"count": per_agent, "tag": EVENT_TAG}, 30.0)
        if not outcome.complete:
            raise RuntimeError(f"test.fire_events answered by {len(outcome.returns)}/{len(self.ids)}")
        self.jobs += 1
        self.events += per_agent * len(self.ids)
        for _ in range(max(0, jobs - 1)):
            if not client.run(everyone, "test.ping", [], {}, 30.0).complete:
                raise RuntimeError("a ping went unanswered during the soak")
            self.jobs += 1


def slope_mb_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minute, MB) points; 0 with fewer than two."""
    if len(points) < 2:
        return 0.0
    return statistics.linear_regression([p[0] for p in points], [p[1] for p in points]).slope


def report(soak: Soak) -> None:
    """Print the slopes after the warm-up sample."""
    steady = soak.samples[1:] if len(soak.samples) > 2 else soak.samples
    # Caches fill early (the job cache's SQLite pages, allocator arenas); a leak keeps climbing, so
    # the slope over the second half is printed beside the slope over the whole run.
    late = soak.samples[len(soak.samples) // 2:]
    for name, pick in (("master", lambda s: s.master_mb), ("agent median", lambda s: s.agent_median_mb),
                       ("agent max", lambda s: s.agent_max_mb)):
        points = [(s.minute, pick(s)) for s in steady]
        late_points = [(s.minute, pick(s)) for s in late]
        print(f"slope {name}: {slope_mb_per_minute(points):+.3f} MB/min "
              f"({points[0][1]:.1f} -> {points[-1][1]:.1f} MB); second half {slope_mb_per_minute(late_points):+.3f}")
    print(f"load: {soak.jobs} jobs, {soak.events} events in {soak.samples[-1].minute:.1f} min; "
          f"load loop behind schedule by {soak.late_seconds:.1f} s in all")


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--jobs-per-second", type=int, default=2)
    parser.add_argument("--events-per-second", type=int, default=1000)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        soak = Soak(Cluster(Path(tmp), heartbeat_seconds=10.0, log_level="info"),
                    [f"hv{i:02d}" for i in range(args.agents)])
        try:
            say(f"starting a master and {args.agents} agents")
            soak.start()
            say(f"{args.minutes} minutes of load")
            soak.run(args.minutes * 60, args.jobs_per_second, args.events_per_second, args.sample_seconds)
        finally:
            soak.cluster.stop()
    report(soak)
    return 0


if __name__ == "__main__":
    sys.exit(main())
