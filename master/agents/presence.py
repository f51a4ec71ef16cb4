"""Which agents are up, since when, with which labels, and how to reach them on the ROUTER.

An agent is up from its first authenticated message and down after three
heartbeat intervals of silence; each transition is an event and is stored, so
that after a restart the master can still say "offline since T" or "never
connected".
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass, field

from saltmarsh.protocol.tags import agent_tag

from ..events.bus import EventBus
from ..store.jobcache import AgentRecord, JobCache

log = logging.getLogger(__name__)

MISSED_HEARTBEATS = 3


@dataclass
class AgentState:
    """Live state of one agent."""

    agent_id: str
    labels: dict[str, str] = field(default_factory=dict)
    version: str = ""
    first_seen: float = 0.0
    last_seen: float = 0.0
    down_since: float | None = None
    routing_id: bytes | None = None
    up: bool = False
    up_since: float | None = None  # live only: nobody is up across a master restart
    address: str = ""  # where its last hello came from (live only), for the fleet view
    last_hello: float = 0.0  # when it last authenticated (live only): a restarted agent says hello again


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Presence:
    """Tracks agents' liveness from the messages they send."""

    def __init__(self, cache: JobCache, bus: EventBus, heartbeat_seconds: float) -> None:
        self._cache = cache
        self._bus = bus
        self._timeout = heartbeat_seconds * MISSED_HEARTBEATS
        self._agents: dict[str, AgentState] = {}
        self._dirty_seen: dict[str, float] = {}
        for rec in cache.agents():
            # Nobody is up until they speak to this master process.
            down = rec.down_since if rec.down_since is not None else rec.last_seen
            self._agents[rec.agent_id] = AgentState(
                rec.agent_id, rec.labels, rec.version, rec.first_seen, rec.last_seen, down
            )

    def get(self, agent_id: str) -> AgentState | None:
        """The state of ``agent_id`` if it ever connected."""
        return self._agents.get(agent_id)

    def labels(self, agent_id: str) -> dict[str, str]:
        """Last labels ``agent_id`` reported ({} if it never connected)."""
        state = self._agents.get(agent_id)
        return state.labels if state else {}

    def routing_id(self, agent_id: str) -> bytes | None:
        """The ROUTER identity of the agent's last message, if any."""
        state = self._agents.get(agent_id)
        return state.routing_id if state else None

    def hello_since(self, agent_id: str, since: float) -> bool:
        """Whether ``agent_id`` has said hello (authenticated anew: it restarted, or its link did) after ``since``."""
        state = self._agents.get(agent_id)
        return state is not None and state.last_hello > since

    def is_up(self, agent_id: str) -> bool:
        """True if the agent is connected now."""
        state = self._agents.get(agent_id)
        return bool(state and state.up)

    def up_agents(self) -> list[str]:
        """Ids of agents that are up."""
        return [a for a, s in self._agents.items() if s.up]

    def hello(self, agent_id: str, labels: dict[str, str], version: str, routing_id: bytes,
              address: str = "") -> None:
        """Record an authenticated hello: labels, version and address may have changed."""
        state = self._state(agent_id)
        state.labels, state.version, state.address = dict(labels), version, address
        state.last_hello = time.time()
        self.seen(agent_id, routing_id)
        self._save(state)

    def note_unaccepted(self, agent_id: str, labels: dict[str, str], version: str, routing_id: bytes,
                        address: str = "") -> None:
        """Remember an agent whose key is not accepted yet: its labels, and how to push acceptance."""
        state = self._state(agent_id)
        state.labels, state.version, state.routing_id, state.address = dict(labels), version, routing_id, address

    def seen(self, agent_id: str, routing_id: bytes) -> None:
        """Record any authenticated message from an accepted agent."""
        state = self._state(agent_id)
        now = time.time()
        state.last_seen, state.routing_id = now, routing_id
        self._dirty_seen[agent_id] = now
        if not state.up:
            log.info("agent %s is up (%s)", agent_id, self._was(state))
            state.up, state.down_since, state.up_since = True, None, now
            self._save(state)
            self._bus.fire(agent_tag(agent_id, "up"), {"id": agent_id, "labels": state.labels})

    def heartbeat(self, agent_id: str, routing_id: bytes) -> None:
        """Record a heartbeat and raise its event."""
        self.seen(agent_id, routing_id)
        self._bus.fire(agent_tag(agent_id, "heartbeat"), {"id": agent_id})

    def sweep(self) -> None:
        """Mark silent agents down and flush last-seen times to the cache."""
        cutoff = time.time() - self._timeout
        for state in self._agents.values():
            if state.up and state.last_seen < cutoff:
                self.mark_down(state.agent_id, "no heartbeat")
        if self._dirty_seen:
            self._cache.save_last_seen(self._dirty_seen)
            self._dirty_seen = {}

    def mark_down(self, agent_id: str, why: str) -> None:
        """Mark an agent down now (silence, or its key was rejected or deleted)."""
        state = self._agents.get(agent_id)
        if state is None or not state.up:
            return
        state.up, state.down_since, state.up_since = False, time.time(), None
        log.info("agent %s is down: %s (last seen %s)", agent_id, why, _when(state.last_seen))
        self._save(state)
        self._bus.fire(agent_tag(agent_id, "down"), {"id": agent_id, "reason": why})

    def forget(self, agent_id: str) -> None:
        """Drop everything known of an agent (its key was deleted)."""
        self.mark_down(agent_id, "key deleted")
        self._agents.pop(agent_id, None)
        self._dirty_seen.pop(agent_id, None)
        self._cache.forget_agent(agent_id)

    def why_silent(self, agent_id: str) -> str:
        """Why an expected agent did not answer: never connected, offline since T, or timed out."""
        state = self._agents.get(agent_id)
        if state is None or state.first_seen == 0.0:
            return "never connected"
        if not state.up:
            return f"offline since {_when(state.down_since or state.last_seen)}"
        return f"timed out (agent up, last seen {_when(state.last_seen)})"

    @staticmethod
    def _was(state: AgentState) -> str:
        """What an agent coming up was before: new, or offline since when."""
        if not state.first_seen:
            return "first contact"
        return f"was offline since {_when(state.down_since or state.last_seen)}"

    def _state(self, agent_id: str) -> AgentState:
        state = self._agents.get(agent_id)
        if state is None:
            state = self._agents[agent_id] = AgentState(agent_id)
        return state

    def _save(self, state: AgentState) -> None:
        if not state.first_seen:
            if not state.up:
                return  # only routing noted: not yet an agent that connected
            state.first_seen = state.last_seen
        self._cache.save_agent(AgentRecord(
            state.agent_id, state.labels, state.version, state.first_seen, state.last_seen, state.down_since
        ))
