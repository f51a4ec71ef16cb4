"""A local client of the master's control socket: what the CLI uses, and the Python API.

    from saltmarsh.master.client import MasterClient
    with MasterClient.from_config_dir(Path("/etc/saltmarsh")) as client:
        for event in client.events("saltmarsh/job/"):
            print(event.tag, event.data)

Synchronous on purpose: a CLI should start fast and a script should not need
an event loop to watch events.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.errors import MalformedFrame
from saltmarsh.protocol.messages import Target

from .config import load_master_config
from .control_messages import ControlReply, ControlRequest
from .errors import CommandError, NotRunning
from .eventbus import Event

DEFAULT_REPLY_TIMEOUT = 10.0


@dataclass
class JobOutcome:
    """What came of a job: returns by agent, and why each silent agent was silent."""

    jid: str
    expected: list[str]
    returns: dict[str, dict[str, Any]] = field(default_factory=dict)
    silent: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True if every expected agent answered."""
        return not self.silent and set(self.expected) <= set(self.returns)


class MasterClient:
    """Commands and event streams over the master's control socket."""

    def __init__(self, socket_path: Path, reply_timeout: float = DEFAULT_REPLY_TIMEOUT) -> None:
        if not socket_path.exists():
            raise NotRunning(f"no master control socket at {socket_path} (is saltmarsh-master running?)")
        self._timeout = reply_timeout
        self._ctx = zmq.Context()
        self._socket = self._ctx.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(f"ipc://{socket_path}")
        self._ids = itertools.count(1)
        self._early: dict[int, list[Event]] = {}

    @classmethod
    def from_config_dir(cls, config_dir: Path, reply_timeout: float = DEFAULT_REPLY_TIMEOUT) -> MasterClient:
        """Connect to the master configured in ``config_dir``."""
        return cls(load_master_config(config_dir).control_socket, reply_timeout)

    def __enter__(self) -> MasterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket."""
        self._socket.close(linger=0)
        self._ctx.term()

    def call(self, cmd: str, **args: Any) -> Any:
        """Run a command and return its result; CommandError if the master refused it."""
        request_id = self._send(cmd, args)
        return self._result(request_id)

    def call_with_events(self, cmd: str, on_event: Callable[[Event], None], **args: Any) -> Any:
        """Run a command that streams events under its own request (progress) until its reply."""
        request_id = self._send(cmd, args)
        while True:
            for event in self._early.pop(request_id, []):
                on_event(event)
            reply = self._recv(None)
            if reply is None:
                continue
            if reply.events is not None:
                if reply.id == request_id:
                    for event in reply.events:
                        on_event(event)
                continue
            if reply.id == request_id:
                self._end_stream(request_id)
                if not reply.ok:
                    raise CommandError(reply.error)
                return reply.result

    def events(self, pattern: str = "", *, idle_timeout: float | None = None) -> Iterator[Event]:
        """Yield every event whose tag matches ``pattern`` (prefix or glob), as they happen.

        Ends after ``idle_timeout`` seconds without an event, if given.
        """
        request_id = self._send("events.subscribe", {"pattern": pattern})
        self._result(request_id)
        try:
            while True:
                batch = self._next_events(request_id, idle_timeout)
                if batch is None:
                    return
                yield from batch
        finally:
            self._end_stream(request_id)

    def run(self, target: Target, fun: str, args: list[Any], kwargs: dict[str, Any], timeout: float) -> JobOutcome:
        """Run a job and wait until every expected agent answered or ``timeout`` passed."""
        request_id = self._send(
            "run", {"fun": fun, "target": target, "args": args, "kwargs": kwargs, "timeout": timeout}
        )
        started = self._result(request_id)
        outcome = JobOutcome(started["jid"], started["expected"])
        deadline = time.monotonic() + timeout
        while not set(outcome.expected) <= set(outcome.returns):
            remaining = deadline - time.monotonic()
            batch = self._next_events(request_id, remaining) if remaining > 0 else None
            if batch is None:
                break
            for event in batch:
                outcome.returns[event.data["id"]] = event.data
        self._end_stream(request_id)
        if not set(outcome.expected) <= set(outcome.returns):
            outcome.silent = self.call("job.silent", jid=outcome.jid)
        return outcome

    def _end_stream(self, request_id: int) -> None:
        """Tell the master we are done with a request's events (a long-lived client must).

        Not awaited: a master that has gone away has no stream left to end, and its
        reply, when it comes, is skipped like any reply nobody waits for.
        """
        self._early.pop(request_id, None)
        if self._socket.closed:
            return
        frame = encode(ControlRequest(next(self._ids), "stream.end", {"id": request_id}))
        with contextlib.suppress(zmq.Again):  # no master to send to: nothing to end
            self._socket.send(frame, flags=zmq.NOBLOCK)

    def _send(self, cmd: str, args: dict[str, Any]) -> int:
        request_id = next(self._ids)
        self._socket.send(encode(ControlRequest(request_id, cmd, args)))
        return request_id

    def _recv(self, deadline: float | None) -> ControlReply | None:
        """The next reply, or None once ``deadline`` (a time.monotonic() value) has passed.

        Replies that are not awaited (the master's keep-alives, another
        stream's events) do not move the deadline.
        """
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if not self._socket.poll(max(0, int(remaining * 1000 + 0.5))):
                return None
        try:
            return decode(self._socket.recv(), ControlReply, "control reply")
        except MalformedFrame as exc:
            raise CommandError(f"unreadable reply from the master: {exc}") from exc

    def _result(self, request_id: int) -> Any:
        deadline = time.monotonic() + self._timeout
        while True:
            reply = self._recv(deadline)
            if reply is None:
                raise NotRunning(f"the master did not answer within {self._timeout:.0f} s")
            if reply.events is not None:
                self._early.setdefault(reply.id, []).extend(reply.events)
            elif reply.id == request_id:
                if not reply.ok:
                    raise CommandError(reply.error)
                return reply.result

    def _next_events(self, request_id: int, timeout: float | None) -> list[Event] | None:
        if self._early.get(request_id):
            return self._early.pop(request_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reply = self._recv(deadline)
            if reply is None:
                return None
            if reply.events and reply.id == request_id:
                return reply.events
