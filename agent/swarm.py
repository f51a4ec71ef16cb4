"""Swarm mode: many real agents in one process, to load a master the way a large fleet would.

    python -m saltmarsh.agent.swarm -c CONFIG_DIR --count N [--first I]

Each member is the ordinary :class:`Agent` built from the same ``agent.yaml``,
with its own id (``<id>-<number>``), root dir (``<root_dir>/<member id>``),
Ed25519 key, request and publish connections, heartbeats, outboxes and libvirt
connection. They differ from N separate processes only in what a process
holds once: the event loop, the ZeroMQ context (one I/O thread instead of N),
the job worker lanes, and the check of each job frame's signature (the same bytes
reach every member; agent/verified.py). bench/swarm.py runs 1,000 agents this way in a few
processes on a 2-core machine; nothing else should need it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import resource
import sys

import zmq
import zmq.asyncio

from saltmarsh.protocol.daemon import cancel_and_wait, daemon_main

from .agent import Agent
from .config import AgentConfig
from .daemon import SPEC
from .lanes import JobLanes
from .verified import VerifiedFrames

log = logging.getLogger(__name__)

# Four sockets per member (the DEALER, the SUB, and the two ends of the SUB's monitor),
# plus the context's own; libzmq's default cap is 1,023.
SOCKETS_PER_MEMBER = 4
# Every member's connections are file descriptors (two TCP connections and their mailboxes),
# and so is its spool (agent/spool.py: the SQLite file, its WAL and its shared-memory file),
# and the lock on its root dir (protocol/statedir.py), held from start-up on, and the mailboxes
# of the SUB's monitor.
FDS_PER_MEMBER = 14


@dataclasses.dataclass(frozen=True)
class SwarmSpec:
    """How many members this process runs, and the number of the first."""

    count: int
    first: int = 0


def member_id(base_id: str, number: int) -> str:
    """The id of swarm member ``number``: ``<base id>-<number, 5 digits>``."""
    return f"{base_id}-{number:05d}"


def member_configs(base: AgentConfig, spec: SwarmSpec) -> list[AgentConfig]:
    """One config per member: the base config with the member's id, root dir and TLS names."""
    configs = []
    for number in range(spec.first, spec.first + spec.count):
        agent_id = member_id(base.agent_id, number)
        configs.append(dataclasses.replace(
            base, agent_id=agent_id, root_dir=base.root_dir / agent_id, tls_names=[agent_id],
        ))
    return configs


class Swarm:
    """Runs ``spec.count`` agents on one event loop with one ZeroMQ context and one set of job lanes."""

    def __init__(self, base: AgentConfig, spec: SwarmSpec) -> None:
        self.configs = member_configs(base, spec)
        raise_open_files_limit(len(self.configs) * FDS_PER_MEMBER)
        self._zmq = zmq.asyncio.Context()
        # Twice the members' sockets: a socket closed by a reset (agent/channel.py) keeps its slot
        # until libzmq's reaper frees it, and when the master is slow many members reset at once.
        self._zmq.set(zmq.MAX_SOCKETS, 2 * len(self.configs) * SOCKETS_PER_MEMBER + 64)
        self._lanes = JobLanes(max(c.worker_threads for c in self.configs))
        verified = VerifiedFrames()  # each job frame's signature checked once for all the members
        self.agents = [Agent(config, self._zmq, self._lanes, verified) for config in self.configs]

    async def run(self, stop: asyncio.Event) -> None:
        """Run every member until ``stop`` is set, then stop them all."""
        log.info("swarm of %d agents (%s … %s) starting", len(self.agents),
                 self.configs[0].agent_id, self.configs[-1].agent_id)
        tasks = [asyncio.create_task(agent.run(stop), name=agent.config.agent_id) for agent in self.agents]
        try:
            await stop.wait()
            await asyncio.gather(*tasks)
        finally:
            await cancel_and_wait(tasks)
            self._lanes.shutdown()
            self._zmq.term()
        log.info("swarm stopped")


def raise_open_files_limit(wanted: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never past the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("open files limited to %d; %d members may need %d", target, wanted // FDS_PER_MEMBER, wanted)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``--count``/``--first`` here, everything else as ``saltmarsh-agent``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first", type=int, default=0)
    known, rest = parser.parse_known_args(argv)
    if known.count < 1 or known.first < 0:
        print("saltmarsh-agent swarm: --count must be >= 1 and --first >= 0", file=sys.stderr)
        return 2
    spec = SwarmSpec(count=known.count, first=known.first)
    # Before daemon_main, which locks every member's root dir (one descriptor each) before Swarm exists.
    raise_open_files_limit(spec.count * FDS_PER_MEMBER)
    # saltmarsh-agent's own start-up (config, logging, fatal errors); only what it builds and locks differs.
    # Each member's root dir is locked, not the shared base: several swarm processes share one agent.yaml
    # (bench/swarm.py), each with its own --first, and two that overlap are refused.
    daemon = dataclasses.replace(
        SPEC, prog="saltmarsh-agent swarm", description="Run many saltmarsh agents in one process (load testing).",
        build=lambda config: Swarm(config, spec),
        state_dirs=lambda config: [(c.root_dir, c.root_dir_mode) for c in member_configs(config, spec)],
    )
    return daemon_main(daemon, rest)


if __name__ == "__main__":
    sys.exit(main())
