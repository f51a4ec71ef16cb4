"""``/metrics`` in Prometheus's text format (version 0.0.4), scope ``metrics:read``.

Counted from the bus as events pass (since this master started): job returns by function and outcome,
with the agents' own durations as a histogram; migrations in progress from their progress events.
Read at scrape time from the master's own state: agents by state, events published, request-channel
rejections by reason, each hypervisor's free memory and CPUs and its VMs by state (every state seen,
not only running ones). No dependency: the format is a few lines of text.
"""

from __future__ import annotations

import bisect
import collections
import time
from typing import TYPE_CHECKING

from ..events.bus import Event

if TYPE_CHECKING:
    from ..server import Master

# Seconds; the agents' own measure of each job (JobReturn.duration).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# A migration counts as in progress while its progress events keep coming (the agent sends one a second).
MIGRATION_QUIET_SECONDS = 5.0
MAX_SERIES = 10_000  # function x outcome pairs kept; past it new pairs count under fun="_other"
# The VM states a hypervisor's gauge always shows (0 where none), beside any other state seen.
VM_STATES = ("running", "blocked", "paused", "shutdown", "shutoff", "crashed", "pmsuspended", "nostate")
AGENT_STATES = ("up", "down", "never connected")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(str(value))}"' for name, value in labels.items()) + "}"


class Family:
    """One metric family being written: its HELP and TYPE once, then its samples."""

    def __init__(self, lines: list[str], name: str, kind: str, text: str) -> None:
        self._lines, self.name = lines, name
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]

    def sample(self, value: float, suffix: str = "", **labels: str) -> None:
        """One line: ``name{labels} value``."""
        self._lines.append(f"{self.name}{suffix}{_labels(labels)} {value:g}")


class Metrics:
    """What the bus tells as it goes, and the rendering of everything at scrape time."""

    def __init__(self, master: Master) -> None:
        self._master = master
        self._jobs: collections.Counter[tuple[str, str]] = collections.Counter()
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = collections.defaultdict(float)
        self._migrations: dict[tuple[str, str], tuple[float, int]] = {}  # (agent, vm) -> (when, bytes left)
        self._handles = [master.bus.subscribe("saltmarsh/job/*/ret/*", self._on_return),
                         master.bus.subscribe("saltmarsh/virt/*/migration/*/progress", self._on_migration),
                       master.bus.subscribe("saltmarsh/virt/*/image/*/cache", self._on_image_lookup)]
        self._image_lookups: collections.Counter[str] = collections.Counter(hit=0, miss=0)

    def close(self) -> None:
        """Stop counting."""
        for handle in self._handles:
            self._master.bus.unsubscribe(handle)

    def _on_return(self, event: Event) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        fun = str(data.get("fun", "?"))
        error = data.get("error")
        outcome = "success" if data.get("success") else str(error.get("type", "error")) if isinstance(error, dict) \
            else "error"
        if (fun, outcome) not in self._jobs and len(self._jobs) >= MAX_SERIES:
            fun = "_other"
        self._jobs[(fun, outcome)] += 1
        duration = data.get("duration")
        if isinstance(duration, int | float):
            buckets = self._buckets.setdefault(fun, [0] * (len(DURATION_BUCKETS) + 1))
            buckets[bisect.bisect_left(DURATION_BUCKETS, float(duration))] += 1
            self._sums[fun] += float(duration)

    def _on_migration(self, event: Event) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        remaining = data.get("remaining", 0)
        self._migrations[(event.agent, str(data.get("vm", "?")))] = (
            time.monotonic(), int(remaining) if isinstance(remaining, int) else 0)

    def _on_image_lookup(self, event: Event) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        self._image_lookups["hit" if data.get("hit") is True else "miss"] += 1

    def render(self) -> str:
        """Every family, as Prometheus reads it."""
        lines: list[str] = []
        self._agents(lines)
        self._job_families(lines)
        self._bus_families(lines)
        self._hypervisors(lines)
        self._migration_family(lines)
        family = Family(lines, "saltmarsh_image_cache_lookups_total", "counter",
                        "Images agents looked up in their caches, by outcome (a miss is fetched from the master).")
        for outcome, count in sorted(self._image_lookups.items()):
            family.sample(count, outcome=outcome)
        return "\n".join(lines) + "\n"

    def _agents(self, lines: list[str]) -> None:
        master = self._master
        counts = collections.Counter(dict.fromkeys(AGENT_STATES, 0))
        keys = collections.Counter(dict.fromkeys(("accepted", "pending", "rejected"), 0))
        for key in master.keys.store.all():
            keys[str(key.state)] += 1
            if str(key.state) == "accepted":
                known = master.presence.get(key.agent_id)
                counts["up" if master.presence.is_up(key.agent_id) else
                       "never connected" if known is None else "down"] += 1
        family = Family(lines, "saltmarsh_agents", "gauge", "Agents with an accepted key, by state.")
        for name, count in counts.items():
            family.sample(count, state=name)
        family = Family(lines, "saltmarsh_agent_keys", "gauge", "Agent keys by state.")
        for name, count in keys.items():
            family.sample(count, state=name)

    def _job_families(self, lines: list[str]) -> None:
        family = Family(lines, "saltmarsh_job_returns_total", "counter",
                        "Job returns since the master started, by function and outcome (success or error type).")
        for (fun, outcome), count in sorted(self._jobs.items()):
            family.sample(count, fun=fun, outcome=outcome)
        family = Family(lines, "saltmarsh_job_duration_seconds", "histogram",
                        "How long jobs ran on the agents (their own measure), by function.")
        for fun, buckets in sorted(self._buckets.items()):
            total = 0
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), buckets, strict=True):
                total += count
                family.sample(total, "_bucket", fun=fun, le="+Inf" if bound == float("inf") else f"{bound:g}")
            family.sample(self._sums[fun], "_sum", fun=fun)
            family.sample(total, "_count", fun=fun)

    def _bus_families(self, lines: list[str]) -> None:
        master = self._master
        Family(lines, "saltmarsh_events_total", "counter", "Events published on the master's bus.").sample(
            master.bus.published)
        family = Family(lines, "saltmarsh_request_rejections_total", "counter",
                        "Frames the request channel refused, by reason.")
        for reason, count in sorted(master.channel.rejected_by.items()):
            family.sample(count, reason=reason)

    def _hypervisors(self, lines: list[str]) -> None:
        hosts = self._master.inventory.hosts()
        memory = Family(lines, "saltmarsh_hypervisor_free_memory_mib", "gauge",
                        "Memory not given to running VMs, per hypervisor.")
        for host in hosts:
            memory.sample(host.freemem, hypervisor=host.agent_id)
        cpus = Family(lines, "saltmarsh_hypervisor_free_cpus", "gauge", "CPUs not committed to running VMs.")
        for host in hosts:
            cpus.sample(host.freecpu, hypervisor=host.agent_id)
        vms = Family(lines, "saltmarsh_vms", "gauge", "VMs per hypervisor by state.")
        for host in hosts:
            states = collections.Counter(dict.fromkeys(VM_STATES, 0))
            states.update(str(vm.get("state", "nostate")) for vm in host.vms.values())
            for state, count in sorted(states.items()):
                vms.sample(count, hypervisor=host.agent_id, state=state)

    def _migration_family(self, lines: list[str]) -> None:
        now = time.monotonic()
        for key, (when, _) in list(self._migrations.items()):
            if now - when > MIGRATION_QUIET_SECONDS:
                del self._migrations[key]
        Family(lines, "saltmarsh_migrations_in_progress", "gauge", "Live migrations running now.").sample(
            len(self._migrations))
        family = Family(lines, "saltmarsh_migration_remaining_bytes", "gauge",
                        "Bytes a running migration still has to send, by source and VM.")
        for (agent, vm), (_, remaining) in sorted(self._migrations.items()):
            family.sample(remaining, source=agent, vm=vm)

