"""Operations: a call that changes state and may take a while answers ``202`` with an operation id at once.

As Incus does: ``POST /v1/vms`` (virt init), ``POST /v1/vms/<name>/<op>`` and ``POST
/v1/vms/<name>/migrate`` run as a task on the master's loop and answer ``202 {"operation": {...}}``;
``GET /v1/operations/<id>`` shows it (``running``, ``succeeded`` with its result, ``failed`` with its
error in the one shape, ``cancelled``), ``GET /v1/operations/<id>/wait?timeout=S`` answers once it
ended or S passed, ``DELETE /v1/operations/<id>`` cancels it where it can: a migration is aborted
(libvirt's own abort, through ``virt.migrate_abort``); other operations are jobs already on an agent,
which cannot be taken back, and answer 409. Only the token that started an operation sees it.

Operations live in the master's memory: a restart forgets them (the VMs and jobs they made are in
the inventory and the job cache). At most MAX_OPERATIONS are kept; ended ones go first, oldest first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from ..errors import CommandError
from ..service.errors import Conflict, InternalError, NotFound, Refused, ServiceError, Unavailable

log = logging.getLogger(__name__)

MAX_OPERATIONS = 1000
KEEP_ENDED_SECONDS = 3600.0
Status = Literal["running", "succeeded", "failed", "cancelled"]


class OperationView(msgspec.Struct, frozen=True, kw_only=True):
    """An operation as the API shows it."""

    id: str
    command: str
    status: Status
    created: float
    ended: float | None
    result: Any = None
    error: dict[str, str] | None = None
    cancellable: bool


@dataclass
class Operation:
    """One running or ended operation."""

    id: str
    command: str
    owner: str  # the token's name
    task: asyncio.Task[Any]
    cancel: Callable[[], Awaitable[Any]] | None
    created: float = field(default_factory=time.time)
    ended: float | None = None
    status: Status = "running"
    result: Any = None
    error: dict[str, str] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def view(self) -> OperationView:
        """What the API shows."""
        return OperationView(id=self.id, command=self.command, status=self.status, created=self.created,
                             ended=self.ended, result=self.result, error=self.error,
                             cancellable=self.cancel is not None and self.status == "running")


class Operations:
    """The master's operations, by id."""

    def __init__(self) -> None:
        self._by_id: collections.OrderedDict[str, Operation] = collections.OrderedDict()
        self._serial = itertools.count(1)

    def start(self, command: str, owner: str, work: Awaitable[Any],
              cancel: Callable[[], Awaitable[Any]] | None = None) -> Operation:
        """Run ``work`` as a new operation; ``cancel`` (if any) is what DELETE does."""
        self._trim()
        op_id = f"{next(self._serial)}-{secrets.token_hex(6)}"
        operation = Operation(op_id, command, owner, asyncio.ensure_future(work), cancel)
        operation.task.add_done_callback(lambda task: self._ended(operation, task))
        self._by_id[op_id] = operation
        log.info("http: operation %s (%s) started by token=%s", op_id, command, owner)
        return operation

    def get(self, op_id: str, owner: str) -> Operation:
        """The operation ``op_id`` if ``owner`` started it; NotFound otherwise (another's is not shown)."""
        operation = self._by_id.get(op_id)
        if operation is None or operation.owner != owner:
            raise NotFound(f"no operation {op_id}")
        return operation

    async def wait(self, op_id: str, owner: str, timeout: float) -> OperationView:
        """The operation once it ended, or as it is after ``timeout``."""
        operation = self.get(op_id, owner)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(operation.done.wait(), timeout)
        return operation.view()

    async def cancel(self, op_id: str, owner: str) -> OperationView:
        """Cancel a running operation where it can be; Conflict where it cannot."""
        operation = self.get(op_id, owner)
        if operation.status != "running":
            raise Conflict(f"operation {op_id} has ended ({operation.status})")
        if operation.cancel is None:
            raise Conflict(f"operation {op_id} ({operation.command}) cannot be cancelled: its job is on the agent")
        await operation.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(operation.done.wait(), 30)
        return operation.view()

    def _ended(self, operation: Operation, task: asyncio.Task[Any]) -> None:
        operation.ended = time.time()
        if task.cancelled():
            operation.status = "cancelled"
        elif (exc := task.exception()) is not None:
            operation.status = "failed"
            if isinstance(exc, ServiceError):
                operation.error = {"code": exc.code, "message": str(exc)}
            elif isinstance(exc, CommandError):
                operation.error = {"code": Refused.code, "message": str(exc)}
            else:
                log.error("operation %s (%s) failed inside the master", operation.id, operation.command,
                          exc_info=exc)
                operation.error = {"code": InternalError.code, "message": "internal error (logged on the master)"}
        else:
            operation.status = "succeeded"
            operation.result = msgspec.to_builtins(task.result())
        operation.done.set()
        log.info("http: operation %s (%s) %s", operation.id, operation.command, operation.status)

    def _trim(self) -> None:
        now = time.time()
        for op_id, operation in list(self._by_id.items()):
            if operation.ended is not None and (now - operation.ended > KEEP_ENDED_SECONDS
                                                or len(self._by_id) >= MAX_OPERATIONS):
                del self._by_id[op_id]
        if len(self._by_id) >= MAX_OPERATIONS:
            raise Unavailable(f"{MAX_OPERATIONS} operations are running: wait for some to end")
