"""Inventory resyncs when an agent comes up: a digest first, the full inventory only when it changed.

An agent comes up on this master (presence's ``saltmarsh/agent/<id>/up``) when it starts, when
its key is accepted again, and after the master restarts, when a whole fleet comes up within
seconds; an accepted agent's hello (it started, or lost the master) is checked too, up or not.
The master used to ask each one for ``virt.full_info``: a job per agent (recorded, published,
journaled and answered) and a full inventory back, stored again. At 1,000 agents on a loaded
two-core host, those jobs and the pings of the operator who wants to know that the fleet is
back fought for the same CPU.

Instead the master pushes each agent an InventoryCheck with the digest of what it holds of
that hypervisor (protocol/inventory.py; persisted with the job cache, kept current by
libvirt's events), and the agent pushes its snapshot (the ``saltmarsh/virt/<id>/inventory``
event, which master/cloud/inventory.py applies) only if its own digest differs. The checks are
paced: at most CHECK_BURST at once, CHECKS_PER_SECOND on average, in the order the agents
came up; an agent queued twice is checked once, and one that went down meanwhile is skipped
(it is checked when it comes up again). A check that is lost (the agent's connection dropped
just then) leaves the inventory as it was, kept by events, until the agent next comes up.

Guests (agents that joined by token) are no hypervisors: they are never checked.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging

from saltmarsh.protocol.messages import InventoryCheck

from ..cloud.inventory import Inventory
from ..events.bus import Event
from ..wire.request_channel import RequestChannel
from .keys import KeyManager
from .presence import Presence

log = logging.getLogger(__name__)

# A check costs the master one sealed frame, and an agent whose inventory changed a snapshot
# pushed back (each stored in one transaction): 200 a second let a fleet of 1,000 that comes
# back at once be checked within 5 s without crowding out the jobs that arrive meanwhile.
CHECKS_PER_SECOND = 200.0
CHECK_BURST = 20


class InventoryChecks:
    """Queues agents that came up and sends each an InventoryCheck, paced."""

    def __init__(self, inventory: Inventory, presence: Presence, keys: KeyManager, channel: RequestChannel) -> None:
        self._inventory = inventory
        self._presence = presence
        self._keys = keys
        self._channel = channel
        self._queue: dict[str, None] = {}  # insertion-ordered and without repeats
        self._wakeup = asyncio.Event()
        self.counters: collections.Counter[str] = collections.Counter()  # for `master.ping`

    def on_agent_up(self, event: Event) -> None:
        """Queue a check of the agent that came up (a bus callback)."""
        self.queue(event.tag.split("/")[2])

    def queue(self, agent_id: str) -> None:
        """Check ``agent_id`` soon (once, however often it is queued before its turn); guests never."""
        if self._keys.is_guest(agent_id):
            return
        self._queue[agent_id] = None
        self._wakeup.set()

    async def serve(self) -> None:
        """Send the queued checks until cancelled, CHECK_BURST at a time."""
        pause = CHECK_BURST / CHECKS_PER_SECOND
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                burst = list(itertools.islice(self._queue, CHECK_BURST))
                for agent_id in burst:
                    del self._queue[agent_id]
                    await self._check(agent_id)
                if self._queue:
                    await asyncio.sleep(pause)

    async def _check(self, agent_id: str) -> None:
        routing_id = self._presence.routing_id(agent_id)
        key = self._keys.store.accepted_key(agent_id)
        if routing_id is None or key is None or not self._presence.is_up(agent_id):
            self.counters["skipped"] += 1
            return
        await self._channel.send(routing_id, key, InventoryCheck(digest=self._inventory.digest(agent_id)))
        self.counters["checked"] += 1
        log.debug("inventory check sent to %s", agent_id)

    def status(self) -> dict[str, int]:
        """Checks sent and skipped, and full snapshots applied since start (any cause), for ``master.ping``."""
        return {"checked": self.counters["checked"], "skipped": self.counters["skipped"],
                "snapshots": self._inventory.snapshots}
