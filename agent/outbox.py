"""What the agent owes the master: returns (kept until acknowledged) and batched events.

Returns are re-sent until the master acknowledges them by jid, so a master
restart or a lost frame loses none (the master drops duplicates by
(jid, agent)). Events are batched so one signature covers up to a few
hundred of them; the queue is bounded and drops the oldest, with a count.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from saltmarsh.protocol.messages import Ack, AgentEvent, Events, JobReturn, Message, Returns

from .errors import AgentError

log = logging.getLogger(__name__)

Send = Callable[[Message], Awaitable[Message]]

RETURN_BATCH = 100
EVENT_BATCH = 500
EVENT_QUEUE = 100_000
IN_FLIGHT = 4
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

    def __len__(self) -> int:
        return len(self._pending)

    async def run(self, send: Send, ready: asyncio.Event) -> None:
        """Send pending returns whenever authenticated, until acknowledged."""
        while True:
            await self._wakeup.wait()
            await ready.wait()
            batch = list(self._pending.values())[:RETURN_BATCH]
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


class EventOutbox:
    """Events fired on this agent, sent to the master in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: collections.deque[AgentEvent] = collections.deque()
        self._wakeup = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self.dropped = 0

    def fire_threadsafe(self, tag: str, data: Any) -> None:
        """Fire an event from any thread (functions run in worker threads)."""
        event = AgentEvent(tag=tag, data=data, ts=time.time())
        self._loop.call_soon_threadsafe(self.fire, event)

    def fire(self, event: AgentEvent) -> None:
        """Queue an event (on the loop thread)."""
        if len(self._queue) >= EVENT_QUEUE:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("event queue full: %d oldest events dropped so far", self.dropped)
        self._queue.append(event)
        self._wakeup.set()

    async def run(self, send: Send, ready: asyncio.Event) -> None:
        """Send batches with up to IN_FLIGHT awaiting acknowledgement at once."""
        slots = asyncio.Semaphore(IN_FLIGHT)
        while True:
            await self._wakeup.wait()
            await ready.wait()
            await slots.acquire()
            batch = [self._queue.popleft() for _ in range(min(EVENT_BATCH, len(self._queue)))]
            if not self._queue:
                self._wakeup.clear()
            if not batch:
                slots.release()
                continue
            task = asyncio.create_task(self._send(send, batch, slots))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

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
