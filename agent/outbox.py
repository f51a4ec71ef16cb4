"""What the agent owes the master: returns (kept until acknowledged) and batched events.

Returns are re-sent until the master acknowledges them by jid, so a master
restart or a lost frame loses none (the master drops duplicates by
(jid, agent)). Events are batched so one signature covers up to a few
hundred of them; the queue is bounded and drops the oldest, with a count.

Functions fire events from worker threads. A fired event goes straight onto
the queue (a deque: appends and pops are atomic), and the event loop is woken
only when it is not already due to look, so a burst costs one wake-up per
batch rather than one ``call_soon_threadsafe`` (a self-pipe write) per event.
While the master is connected, a worker thread that finds HIGH_WATER events
queued waits (at most FULL_WAIT_SECONDS) for the sender to catch up instead of
racing ahead into drops: a fast burst then loses nothing and stays small in
memory; when the master is away nothing waits and the oldest events go.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from saltmarsh.protocol.codec import encode
from saltmarsh.protocol.messages import Ack, AgentEvent, Events, JobReturn, Message, Returns

from .errors import AgentError

log = logging.getLogger(__name__)

Send = Callable[[Message], Awaitable[Message]]

RETURN_BATCH = 100
# Well under the default 4 MiB frame limit; a single result is capped at MAX_RESULT_BYTES by the executor.
RETURN_BATCH_BYTES = 2 * 1024 * 1024
EVENT_BATCH = 500
EVENT_QUEUE = 100_000
IN_FLIGHT = 4
HIGH_WATER = 4 * IN_FLIGHT * EVENT_BATCH
FULL_WAIT_SECONDS = 10.0
RETRY_SECONDS = 1.0


class ReturnOutbox:
    """Returns waiting for the master's acknowledgement."""

    def __init__(self) -> None:
        self._pending: dict[str, JobReturn] = {}
        self._wakeup = asyncio.Event()

    def add(self, ret: JobReturn) -> None:
        """Queue a return for sending."""
        self._pending[ret.jid] = ret
        self._wakeup.set()

    async def run(self, send: Send, ready: asyncio.Event) -> None:
        """Send pending returns whenever authenticated, until acknowledged."""
        while True:
            await self._wakeup.wait()
            await ready.wait()
            batch = _bounded_batch(list(self._pending.values())[:RETURN_BATCH])
            if not batch:
                self._wakeup.clear()
                continue
            try:
                reply = await send(Returns(returns=batch))
            except AgentError as exc:
                log.warning("%d returns not delivered yet (%s); retrying", len(self._pending), exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if isinstance(reply, Ack):
                for jid in reply.jids:
                    self._pending.pop(jid, None)
            if not self._pending:
                self._wakeup.clear()


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


class EventOutbox:
    """Events fired on this agent, sent to the master in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: collections.deque[AgentEvent] = collections.deque()
        self._wakeup = asyncio.Event()
        self._wake_due = False  # a wake-up is scheduled on the loop and has not run yet
        self._sending: set[asyncio.Task[None]] = set()
        self._room = threading.Condition()
        self._waiting = 0
        self._stalled = False
        self._ready: asyncio.Event | None = None
        self._closed = False
        self._drop_lock = threading.Lock()
        self.dropped = 0

    def fire_threadsafe(self, tag: str, data: Any) -> None:
        """Fire an event from any thread (functions run in worker threads)."""
        if self._closed:
            raise RuntimeError("the agent is stopping: event not sent")
        event = AgentEvent(tag=tag, data=data, ts=time.time())
        if len(self._queue) >= HIGH_WATER and self._ready is not None and self._ready.is_set():
            self._wait_for_room()
        self._append(event)
        if not self._wake_due:
            self._wake_due = True
            self._loop.call_soon_threadsafe(self._wake)

    def fire(self, event: AgentEvent) -> None:
        """Queue an event (on the loop thread)."""
        self._append(event)
        self._wakeup.set()

    def _append(self, event: AgentEvent) -> None:
        if len(self._queue) >= EVENT_QUEUE:
            with self._drop_lock:
                while len(self._queue) >= EVENT_QUEUE:
                    self._queue.popleft()
                    self.dropped += 1
                    if self.dropped % 1000 == 1:
                        log.warning("event queue full: %d oldest events dropped so far", self.dropped)
        self._queue.append(event)

    def _wake(self) -> None:
        # Cleared before the queue is looked at: an event appended after this line
        # schedules a wake-up of its own.
        self._wake_due = False
        self._wakeup.set()

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

    def _made_room(self) -> None:
        if len(self._queue) >= HIGH_WATER:
            return  # e.g. a failed batch taken again: the sender has not caught up
        self._stalled = False
        if self._waiting:
            with self._room:
                self._room.notify_all()

    async def run(self, send: Send, ready: asyncio.Event) -> None:
        """Send batches with up to IN_FLIGHT awaiting acknowledgement at once."""
        self._ready = ready
        slots = asyncio.Semaphore(IN_FLIGHT)
        try:
            while True:
                await self._wakeup.wait()
                await ready.wait()
                await slots.acquire()
                batch = self._take(EVENT_BATCH)
                if not self._queue:
                    self._wakeup.clear()
                if not batch:
                    slots.release()
                    continue
                self._made_room()
                task = asyncio.create_task(self._send(send, batch, slots))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
        finally:
            self._closed = True
            with self._room:
                self._room.notify_all()

    def _take(self, count: int) -> list[AgentEvent]:
        batch: list[AgentEvent] = []
        popleft = self._queue.popleft
        try:
            for _ in range(min(count, len(self._queue))):
                batch.append(popleft())
        except IndexError:  # emptied meanwhile by a drop on another thread
            pass
        return batch

    async def _send(self, send: Send, batch: list[AgentEvent], slots: asyncio.Semaphore) -> None:
        try:
            await send(Events(events=batch))
        except AgentError as exc:
            log.warning("%d events not delivered yet (%s); retrying", len(batch), exc)
            self._queue.extendleft(reversed(batch))
            self._wakeup.set()
            await asyncio.sleep(RETRY_SECONDS)
        finally:
            slots.release()
