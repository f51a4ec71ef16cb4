"""What the agent owes the master: returns (kept until acknowledged) and events (relayed once each).

Returns: the executor writes each return to the spool (agent/spool.py) before it is sent;
the sender reads them from there and deletes only what the master acknowledged by jid, so a
master restart, a lost frame or an agent restart loses none (the master drops duplicates by
(jid, agent)).

Events: functions fire them from worker threads. A fired event goes straight onto an
in-memory queue (a deque: appends and pops are atomic) as a plain tuple, and the event loop
is woken only when it is not already due to look, so a burst costs one wake-up per batch
rather than one ``call_soon_threadsafe`` (a self-pipe write) per event. The loop gives each
event its id (ascending, see Spool) as it takes it from the queue: one thread numbers them,
in queue order, with no lock per event, and every id still to come is above the ids given.
Batches of EVENT_BATCH go out with up to IN_FLIGHT awaiting their Ack.
While the master acknowledges, a worker thread that finds HIGH_WATER events queued waits (at
most FULL_WAIT_SECONDS) for the sender to catch up instead of racing ahead: a fast burst then
loses nothing, stays small in memory and never touches the disk.

The spool is used only when memory is not the right place:

- from a send that fails or gets no Ack until the next Ack (the master is away, stopped, or
  its link is down), or while the agent is not authenticated: the queue and every batch not
  acknowledged go to the spool (the queue after SPILL_DELAY, so a steady trickle costs one
  transaction per interval), and one batch at a time probes the master;
- while connected, when the queue passes SPILL_AT (producers outran the sender and their wait);
- at shutdown: whatever is queued or unacknowledged.

The sender takes from the spool first, in id order, then from memory, so events leave in the
order they were fired; a spooled event is deleted only when its batch is acknowledged. A
batch may reach the master twice (its Ack was lost, or it waited in a stopped master's socket
while the agent gave up on it): the master relays each id once (master/agents/relay.py).
Each batch carries ``floor``, the lowest id this agent may still send, so the master
remembers a bounded set of ids. A kill -9 loses only what was in memory: while connected,
events not yet sent; while the master is away, at most the last SPILL_DELAY of them.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from saltmarsh.protocol.codec import encode
from saltmarsh.protocol.messages import Ack, AgentEvent, Events, JobReturn, Message, Returns

from .backoff import jittered
from .errors import AgentError, SpoolError
from .spool import Spool

log = logging.getLogger(__name__)

Send = Callable[[Message], Awaitable[Message]]
Fired = tuple[str, Any, float]  # an event as fired (tag, data, time), before the loop numbers it

RETURN_BATCH = 100
# Well under the default 4 MiB frame limit; a single result is capped at MAX_RESULT_BYTES by the executor.
RETURN_BATCH_BYTES = 2 * 1024 * 1024
EVENT_BATCH = 500
EVENT_QUEUE = 100_000
IN_FLIGHT = 4
HIGH_WATER = 4 * IN_FLIGHT * EVENT_BATCH
SPILL_AT = 2 * HIGH_WATER
SPILL_DELAY = 0.05
FULL_WAIT_SECONDS = 10.0
RETRY_SECONDS = 1.0


class ReturnOutbox:
    """Returns in the spool, sent whenever authenticated until the master acknowledges them."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._unspooled: dict[str, JobReturn] = {}  # returns the spool could not take (disk full): memory only
        self._wakeup = asyncio.Event()
        self._wakeup.set()  # returns spooled before a restart go first

    def add(self, ret: JobReturn, *, spooled: bool) -> None:
        """Send ``ret`` (call on the loop); ``spooled`` says whether it is in the spool already."""
        if not spooled:
            self._unspooled[ret.jid] = ret
        self._wakeup.set()

    async def run(self, send: Send, ready: asyncio.Event) -> None:
        """Send pending returns whenever authenticated, until acknowledged."""
        while True:
            await self._wakeup.wait()
            await ready.wait()
            batch = self._batch()
            if not batch:
                self._wakeup.clear()
                continue
            try:
                reply = await send(Returns(returns=batch))
            except AgentError as exc:
                log.warning("%d returns not delivered yet (%s); retrying", len(batch), exc)
                await asyncio.sleep(jittered(RETRY_SECONDS))
                continue
            if isinstance(reply, Ack):
                self._acknowledged(reply.jids)
            else:
                log.warning("the master answered returns with %s, not an Ack; retrying", reply.KIND)
                await asyncio.sleep(jittered(RETRY_SECONDS))

    def idle(self) -> bool:
        """Whether every return has been acknowledged (False, too, when the spool cannot be read)."""
        try:
            return not self._unspooled and not self._spool.returns(1)
        except SpoolError:
            return False

    def _batch(self) -> list[JobReturn]:
        try:
            spooled = self._spool.returns(RETURN_BATCH, RETURN_BATCH_BYTES)
        except SpoolError as exc:
            log.error("spooled returns cannot be read: %s", exc)
            spooled = []
        return _bounded_batch([*self._unspooled.values(), *spooled][:RETURN_BATCH])

    def _acknowledged(self, jids: list[str]) -> None:
        for jid in jids:
            self._unspooled.pop(jid, None)
        try:
            self._spool.delete_returns(jids)
        except SpoolError as exc:
            log.error("acknowledged returns are still in the spool (%s): they may be sent again", exc)


def _bounded_batch(returns: list[JobReturn]) -> list[JobReturn]:
    """The leading returns whose encoded size fits RETURN_BATCH_BYTES (always at least one)."""
    batch: list[JobReturn] = []
    size = 0
    for ret in returns:
        size += len(encode(ret))
        if batch and size > RETURN_BATCH_BYTES:
            break
        batch.append(ret)
    return batch


@dataclass
class _Batch:
    """Events sent together; ``from_disk`` if they are (still) in the spool."""

    events: list[AgentEvent]
    from_disk: bool


class EventOutbox:
    """Events fired on this agent, sent to the master in batches, spooled when it does not acknowledge."""

    def __init__(self, loop: asyncio.AbstractEventLoop, spool: Spool) -> None:
        self._loop = loop
        self._spool = spool
        self._stream = spool.stream
        self._next_id = spool.first_seq + 1
        self._id_lock = threading.Lock()  # ids are given per batch; after the sender stops, per event too
        self._queue: collections.deque[Fired] = collections.deque()
        self._drop_lock = threading.Lock()
        self._retry: list[_Batch] = []  # sent, not acknowledged, and the spool could not take them
        self._wakeup = asyncio.Event()
        self._wake_due = False  # a wake-up is scheduled on the loop and has not run yet
        self._room = threading.Condition()
        self._waiting = 0
        self._stalled = False
        self._ready: asyncio.Event | None = None
        self._closed = False
        self.dropped = 0
        self._unacked: dict[int, _Batch] = {}
        self._numbers = itertools.count()
        self._sending = 0  # sends under way; a failed one holds its slot through the pause before a retry
        self._slot_free = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._online = True  # False from a send without an Ack until the next Ack
        self._disk_cursor = 0  # the highest spooled id taken for sending since the last failure
        self._spill_timer: asyncio.TimerHandle | None = None
        self._spool_failing = False

    # ---- producers (any thread) ----------------------------------------------------------

    def fire_threadsafe(self, tag: str, data: Any) -> None:
        """Fire an event from any thread (functions run in worker threads)."""
        if self._closed:
            self._spool_directly(tag, data)
            return
        if len(self._queue) >= HIGH_WATER and self._online and self._ready is not None and self._ready.is_set():
            self._wait_for_room()
        self._append(tag, data)
        if not self._wake_due:
            self._wake_due = True
            self._loop.call_soon_threadsafe(self._wake)

    def _append(self, tag: str, data: Any) -> None:
        if len(self._queue) >= EVENT_QUEUE:  # only when the spool cannot take them either
            with self._drop_lock:
                while len(self._queue) >= EVENT_QUEUE:
                    self._queue.popleft()
                    self.dropped += 1
                    if self.dropped % 1000 == 1:
                        log.warning("event queue full: %d oldest events dropped so far", self.dropped)
        self._queue.append((tag, data, time.time()))

    def _spool_directly(self, tag: str, data: Any) -> None:
        """After the sender stopped (the agent is stopping, jobs finish): straight into the spool."""
        try:
            self._spool.put_events(self._numbered([(tag, data, time.time())]))
        except SpoolError as exc:
            raise RuntimeError("the agent is stopping: event not sent") from exc

    def _wait_for_room(self) -> None:
        """Block this worker thread until the sender has drained below HIGH_WATER (bounded)."""
        if self._stalled:
            return
        with self._room:
            self._waiting += 1
            try:
                room = self._room.wait_for(
                    lambda: self._closed or len(self._queue) < HIGH_WATER, FULL_WAIT_SECONDS
                )
            finally:
                self._waiting -= 1
        if not room:
            self._stalled = True  # the sender is stuck: stop waiting until it moves again

    # ---- the loop side -------------------------------------------------------------------

    def _wake(self) -> None:
        # Cleared before the queue is looked at: an event appended after this line
        # schedules a wake-up of its own.
        self._wake_due = False
        self._wakeup.set()
        if self._must_spill():
            self._request_spill()

    def _made_room(self) -> None:
        if len(self._queue) >= HIGH_WATER:
            return  # e.g. a failed batch taken again: the sender has not caught up
        self._stalled = False
        if self._waiting:
            with self._room:
                self._room.notify_all()

    def _must_spill(self) -> bool:
        ready = self._ready is not None and self._ready.is_set()
        return not self._online or not ready or len(self._queue) >= SPILL_AT

    def _request_spill(self) -> None:
        if len(self._queue) >= EVENT_BATCH:
            self._spill()
        elif self._spill_timer is None:
            self._spill_timer = self._loop.call_later(SPILL_DELAY, self._spill_when_due)

    def _spill_when_due(self) -> None:
        self._spill_timer = None
        if self._must_spill():
            self._spill()

    def _spill(self) -> None:
        """Move everything queued to the spool (behind what is there: ids keep the order)."""
        events = self._take(len(self._queue))
        if not events:
            return
        try:
            self._spool.put_events(events)
        except SpoolError as exc:
            # Never sent: back to the queue without their ids, to be numbered again when taken.
            self._queue.extendleft(reversed([(e.tag, e.data, e.ts) for e in events]))
            if not self._spool_failing:
                log.error("events cannot be spooled (%s): %d kept in memory only", exc, len(events))
            self._spool_failing = True
            return
        self._spool_failing = False
        self._made_room()

    def _take(self, count: int) -> list[AgentEvent]:
        """Up to ``count`` queued events, oldest first, numbered."""
        fired: list[Fired] = []
        popleft = self._queue.popleft
        try:
            for _ in range(min(count, len(self._queue))):
                fired.append(popleft())
        except IndexError:  # emptied meanwhile by a drop on another thread
            pass
        return self._numbered(fired)

    def _numbered(self, fired: list[Fired]) -> list[AgentEvent]:
        with self._id_lock:
            first = self._next_id
            self._next_id += len(fired)
        return [AgentEvent(tag, data, ts, seq) for seq, (tag, data, ts) in enumerate(fired, first)]

    async def run(self, send: Send, ready: asyncio.Event) -> None:
        """Send batches, the spooled ones first, with up to IN_FLIGHT awaiting acknowledgement."""
        self._ready = ready
        try:
            while True:
                await self._wakeup.wait()
                await ready.wait()
                while self._sending >= (IN_FLIGHT if self._online else 1):
                    self._slot_free.clear()
                    await self._slot_free.wait()
                batch = self._next_batch()
                if batch is None:
                    self._wakeup.clear()
                    continue
                number = next(self._numbers)
                self._unacked[number] = batch
                self._sending += 1
                task = asyncio.create_task(self._send(send, number, batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            self._closed = True
            with self._room:
                self._room.notify_all()
            for task in self._tasks:
                task.cancel()
            self._save_unsent()

    def _next_batch(self) -> _Batch | None:
        if self._retry:
            return self._retry.pop(0)
        if not self._online:
            self._spill()  # what is queued goes behind what is spooled; the probe is the oldest
        if self._spool.event_count:
            events = self._spooled_after(self._disk_cursor)
            if events:
                self._disk_cursor = events[-1].seq
                return _Batch(events, from_disk=True)
            if not self._online:
                return None  # everything spooled is on its way; a failure sends it again
        events = self._take(EVENT_BATCH)
        if not events:
            return None
        self._made_room()
        return _Batch(events, from_disk=False)

    def _spooled_after(self, seq: int) -> list[AgentEvent]:
        try:
            return self._spool.events_after(seq, EVENT_BATCH)
        except SpoolError as exc:
            log.error("spooled events cannot be read: %s", exc)
            return []

    async def _send(self, send: Send, number: int, batch: _Batch) -> None:
        try:
            try:
                reply = await send(Events(events=batch.events, stream=self._stream, floor=self._floor()))
            except AgentError as exc:
                why = str(exc)
            else:
                if isinstance(reply, Ack):
                    self._acknowledged(number, batch)
                    return
                why = f"the master answered {reply.KIND}"
            self._not_acknowledged(number, batch, why)
            await asyncio.sleep(jittered(RETRY_SECONDS))
        finally:
            self._sending -= 1
            self._slot_free.set()

    def _floor(self) -> int:
        """The lowest id this agent may still send: queued, spooled, or sent and not acknowledged."""
        candidates = [b.events[0].seq for b in (*self._unacked.values(), *self._retry)]
        if self._spool.event_count:
            candidates.append(self._spool.min_event_seq)
        return min(candidates, default=self._next_id)  # what is queued gets ids from _next_id on

    def _acknowledged(self, number: int, batch: _Batch) -> None:
        self._unacked.pop(number, None)
        if batch.from_disk:
            try:
                self._spool.delete_events([event.seq for event in batch.events])
            except SpoolError as exc:
                log.error("acknowledged events are still in the spool (%s): they may be sent again", exc)
        if not self._online:
            self._online = True
            log.info("the master acknowledges events again; %d spooled events to send", self._spool.event_count)
            self._spool.report_drops()
        self._wakeup.set()

    def _not_acknowledged(self, number: int, batch: _Batch, why: str) -> None:
        if self._online:
            self._online = False
            log.warning("events not acknowledged (%s): spooling them until the master answers", why)
        if not batch.from_disk:
            try:
                self._spool.put_events(batch.events)
            except SpoolError as exc:
                # They keep their ids: the master may have relayed them already.
                log.error("%d events cannot be spooled (%s): kept in memory to send again", len(batch.events), exc)
                self._retry.append(batch)
        self._unacked.pop(number, None)
        self._disk_cursor = 0  # send every spooled event not acknowledged again
        self._spill()
        self._wakeup.set()

    def _save_unsent(self) -> None:
        """At shutdown: what is queued or was sent without an Ack goes to the spool for the next start."""
        events = [e for b in (*self._unacked.values(), *self._retry) if not b.from_disk for e in b.events]
        events += self._take(len(self._queue))
        if not events:
            return
        try:
            self._spool.put_events(events)
        except SpoolError as exc:
            log.error("%d unsent events lost at shutdown: %s", len(events), exc)
            return
        log.info("%d unsent events kept in the spool for the next start", len(events))
