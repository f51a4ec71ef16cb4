"""A local client of the master's control socket: what the CLI uses, and the Python API.

It sends the service layer's typed requests (master/service/types/) and raises the service's
typed errors (master/service/errors.py) from the code of each refusal; when a job is complete and
why an agent is missing are the service's rules (types.JobOutcome, the ``job.outcome`` operation).

    from saltmarsh.master.control.client import MasterClient
    with MasterClient.from_config_dir(Path("/etc/saltmarsh")) as client:
        for event in client.events("saltmarsh/job/"):
            print(event.tag, event.data)

Synchronous on purpose: a CLI should start fast and a script should not need
an event loop to watch events.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import zmq

from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.errors import MalformedFrame
from saltmarsh.protocol.jobcontrol import RETURN_GRACE_SECONDS
from saltmarsh.protocol.messages import Target

from ..config import load_master_config
from ..errors import CommandError, NotRunning
from ..service.errors import error_for
from ..service.types import Request
from ..service.types.jobs import (
    BatchRequest,
    BatchSize,
    BatchStarted,
    JobOutcome,
    JobStarted,
    OutcomeRequest,
    RunRequest,
    WaitRequest,
)
from .endpoints import DEFAULT_REPLY_TIMEOUT as DEFAULT_REPLY_TIMEOUT
from .endpoints import MASTER_GONE
from .messages import END_STREAM, MAX_CONTROL_FRAME, ControlReply, ControlRequest, Event

# zmq_poll takes its timeout as a C int of milliseconds: a longer wait is polled in slices.
MAX_POLL_MS = 3_600_000


def check_socket(path: Path) -> None:
    """NotRunning, with the reason, unless a process listens on the Unix socket ``path`` and we may connect.

    libzmq retries a refused or forbidden IPC connection quietly for ever; asking the
    kernel first turns each cause (no file, no permission, not a socket, nobody listening)
    into its own one-line message instead of a 10 s wait for an answer that cannot come.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        raise NotRunning(f"no master control socket at {path} (is saltmarsh-master running?)") from exc
    except PermissionError as exc:
        raise NotRunning(f"permission denied reaching the control socket {path}: "
                         "run saltmarsh as the master's user (or root)") from exc
    except OSError as exc:
        raise NotRunning(f"cannot reach the control socket {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISSOCK(mode):
        raise NotRunning(f"{path} is not a socket, so no master listens there (is root_dir right?)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(DEFAULT_REPLY_TIMEOUT)
        try:
            probe.connect(str(path))
        except PermissionError as exc:
            raise NotRunning(f"permission denied opening the control socket {path}: "
                             "run saltmarsh as the master's user (or root)") from exc
        except ConnectionRefusedError as exc:
            raise NotRunning(f"nothing listens on the control socket {path} "
                             "(is saltmarsh-master running?)") from exc
        except OSError as exc:
            raise NotRunning(f"cannot open the control socket {path}: {exc.strerror or exc}") from exc


class MasterClient:
    """Commands and event streams over the master's control socket."""

    def __init__(self, socket_path: Path, reply_timeout: float = DEFAULT_REPLY_TIMEOUT) -> None:
        check_socket(socket_path)
        self._timeout = reply_timeout
        self._ctx = zmq.Context()
        # A client dropped without close() (an exception in its caller) is closed by the garbage
        # collector: with libzmq's default, term() there waits forever for any unsent message.
        self._ctx.set(zmq.BLOCKY, False)
        self._socket = self._ctx.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        # The monitor tells us when the master's end of the connection closes, so that a wait
        # for returns or events ends with that reason rather than running out its time.
        self._monitor = self._socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        # Bumped at each disconnect. libzmq reconnects by itself (and a request sent meanwhile
        # reaches the master that comes back), but one sent before can never be answered.
        self._epoch = 0
        self._sent_in: dict[int, int] = {}
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
        with contextlib.suppress(zmq.ZMQError):  # already disabled: nothing to stop
            self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close(linger=0)
        self._ctx.term()

    def call(self, cmd: str, **args: Any) -> Any:
        """Run a command and return its result; CommandError if the master refused it."""
        request_id = self._send(cmd, args)
        try:
            return self._result(request_id)
        finally:
            self._sent_in.pop(request_id, None)

    def request(self, request: Request) -> Any:
        """Send a typed request (master/service/types/) and return its result; its typed error if refused."""
        return self.call(request.command, **_fields(request))

    def request_with_events(self, request: Request, on_event: Callable[[Event], None]) -> Any:
        """As ``request``, with the events the operation streams (progress) given to ``on_event`` until its reply."""
        return self.call_with_events(request.command, on_event, **_fields(request))

    def call_with_events(self, cmd: str, on_event: Callable[[Event], None], **args: Any) -> Any:
        """Run a command that streams events under its own request (progress) until its reply."""
        request_id = self._send(cmd, args)
        while True:
            for event in self._early.pop(request_id, []):
                on_event(event)
            reply = self._recv(None, request_id)
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
                    raise error_for(reply.code, reply.error)
                return reply.result

    def events(self, pattern: str = "", *, idle_timeout: float | None = None) -> Iterator[Event]:
        """Yield every event whose tag matches ``pattern`` (prefix or glob), as they happen.

        Ends after ``idle_timeout`` seconds without an event, if given.
        """
        from ..service.types.events import SubscribeRequest  # only a subscriber needs it

        request_id = self._send(SubscribeRequest.command, _fields(SubscribeRequest(pattern)))
        self._result(request_id)
        try:
            while True:
                batch = self._next_events(request_id, idle_timeout)
                if batch is None:
                    return
                yield from batch
        finally:
            self._end_stream(request_id)

    def run(self, target: Target, fun: str, args: list[Any], kwargs: dict[str, Any], timeout: float | None = None,
            on_started: Callable[[JobOutcome], None] | None = None) -> JobOutcome:
        """Run a job and wait until every expected agent that is up answered or ``timeout`` passed.

        ``timeout`` (None: the service's default) is also the job's deadline on each agent, which
        answers TimedOut when it passes; the wait lasts RETURN_GRACE_SECONDS longer so that those
        answers arrive. Agents the master knows are offline are not waited for; ``on_started`` is
        given the outcome as soon as the job is out (its ``offline`` and ``unknown`` already filled
        in). If the master goes away meanwhile, the outcome says so in ``lost``.
        """
        request = _run_request(target, fun, args, kwargs, timeout)
        request_id = self._send(request.command, _fields(request))
        outcome = JobOutcome.started(self._started(request_id))
        return self._gather(request_id, outcome, request.timeout + RETURN_GRACE_SECONDS, on_started)

    def submit(self, target: Target, fun: str, args: list[Any], kwargs: dict[str, Any],
               timeout: float | None = None) -> JobOutcome:
        """Publish a job without waiting for it (``run --async``); ``wait`` gathers its returns later."""
        request = _run_request(target, fun, args, kwargs, timeout, wait=False)
        request_id = self._send(request.command, _fields(request))
        try:
            return JobOutcome.started(self._started(request_id))
        finally:
            self._sent_in.pop(request_id, None)

    def wait(self, jid: str, timeout: float | None = None,
             on_started: Callable[[JobOutcome], None] | None = None) -> JobOutcome:
        """Wait for job ``jid`` as ``run`` does: until every expected agent that is up answered.

        Without ``timeout``, until the job's deadline has passed on every agent (the master says
        how long that is); returns already in the job cache count at once.
        """
        args: dict[str, Any] = {"jid": jid} if timeout is None else {"jid": jid, "timeout": timeout}
        request_id = self._send(WaitRequest.command, args)
        started = self._started(request_id)
        return self._gather(request_id, JobOutcome.started(started), started.wait, on_started)

    def run_batch(self, target: Target, fun: str, args: list[Any], kwargs: dict[str, Any],
                  timeout: float | None = None, *, batch: BatchSize, pause: float | None = None,
                  fail_fast: bool = False, on_started: Callable[[JobOutcome, int], None] | None = None) -> JobOutcome:
        """Run a job as a batch (``run -b``): at most ``batch`` agents at a time; the outcome as ``run``'s.

        The master runs the batch (it goes on if this client leaves); this waits for its ``done``
        event. The outcome's ``jid`` is the batch's id; ``on_started`` is given the outcome and how
        many agents run at once. ``timeout`` and ``pause`` None take the service's defaults.
        """
        given = {name: value for name, value in (("timeout", timeout), ("pause", pause)) if value is not None}
        request = BatchRequest(fun, target, batch, args, kwargs, fail_fast=fail_fast, **given)
        request_id = self._send(request.command, _fields(request))
        started = self._converted(request_id, BatchStarted)
        outcome = JobOutcome(jid=started.batch, expected=list(started.expected), offline=dict(started.offline),
                             unknown=dict(started.unknown))
        if on_started is not None:
            on_started(outcome, started.size)
        deadline = time.monotonic() + started.wait + RETURN_GRACE_SECONDS
        try:
            while not self._batch_events(outcome, self._next_events(request_id, deadline - time.monotonic())):
                pass
        except NotRunning as exc:
            outcome.lost = str(exc)
        self._end_stream(request_id)
        outcome.batch_over()
        return outcome

    @staticmethod
    def _batch_events(outcome: JobOutcome, batch: list[Event] | None) -> bool:
        """Fold a batch's events into ``outcome``; True once it is over (``done``, or no event in time)."""
        if batch is None:
            return True
        return any([outcome.batch_event(event.tag, event.data) for event in batch])

    def _converted(self, request_id: int, kind: type[Any]) -> Any:
        """The master's reply to ``request_id`` as ``kind``."""
        try:
            return msgspec.convert(self._result(request_id), type=kind)
        except msgspec.ValidationError as exc:
            raise CommandError(f"unreadable reply from the master: {exc}") from exc

    def _started(self, request_id: int) -> JobStarted:
        """The master's JobStarted reply to ``request_id``."""
        try:
            reply = self._result(request_id)
        except NotRunning as exc:
            if self._answerable(request_id):
                raise  # not a disconnect: the master did not answer in time
            raise NotRunning(f"{exc} before it answered: the job may have gone out "
                             "(see saltmarsh job list once the master is back)") from exc
        try:
            return msgspec.convert(reply, type=JobStarted)
        except msgspec.ValidationError as exc:
            raise CommandError(f"unreadable reply from the master: {exc}") from exc

    def _gather(self, request_id: int, outcome: JobOutcome, timeout: float,
                on_started: Callable[[JobOutcome], None] | None) -> JobOutcome:
        """Collect the returns streamed under ``request_id`` until none is awaited or ``timeout`` passed.

        Then, if an agent has not answered, the master says what came of the job (``job.outcome``):
        its returns and why each missing agent is missing, as it tells every front end.
        """
        if on_started is not None:
            on_started(outcome)
        deadline = time.monotonic() + timeout
        while outcome.waiting:
            remaining = deadline - time.monotonic()
            try:
                batch = self._next_events(request_id, remaining) if remaining > 0 else None
            except NotRunning as exc:
                outcome.master_gone(str(exc))
                break
            if batch is None:
                break
            for event in batch:
                outcome.returns[event.data["id"]] = event.data
        self._end_stream(request_id)
        if not outcome.lost and outcome.unanswered:
            final = msgspec.convert(self.request(OutcomeRequest(outcome.jid)), type=JobOutcome)
            outcome.returns, outcome.silent = final.returns, final.silent  # offline: as named at the start
        return outcome

    def _end_stream(self, request_id: int) -> None:
        """Tell the master we are done with a request's events (a long-lived client must).

        Not awaited: a master that has gone away has no stream left to end, and its
        reply, when it comes, is skipped like any reply nobody waits for.
        """
        self._early.pop(request_id, None)
        self._sent_in.pop(request_id, None)
        if self._socket.closed:
            return
        frame = encode(ControlRequest(next(self._ids), END_STREAM, {"id": request_id}))
        with contextlib.suppress(zmq.Again):  # no master to send to: nothing to end
            self._socket.send(frame, flags=zmq.NOBLOCK)

    def _send(self, cmd: str, args: dict[str, Any]) -> int:
        request_id = next(self._ids)
        try:
            frame = encode(ControlRequest(request_id, cmd, args))
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise CommandError(f"cannot send {cmd}: an argument cannot be encoded ({exc})") from exc
        if len(frame) > MAX_CONTROL_FRAME:
            # The master would only refuse it (and one over twice the limit is dropped unread, with
            # the connection): say so here rather than send a megabyte for nothing.
            raise CommandError(f"cannot send {cmd}: the request is {len(frame)} bytes, more than the "
                               f"{MAX_CONTROL_FRAME} the control socket takes")
        self._read_monitor()  # a disconnect noticed only now happened before this request
        self._socket.send(frame)
        self._sent_in[request_id] = self._epoch
        return request_id

    def _answerable(self, request_id: int) -> bool:
        """False once the connection that carried ``request_id`` has closed."""
        return self._sent_in.get(request_id, self._epoch) == self._epoch

    def _recv(self, deadline: float | None, request_id: int) -> ControlReply | None:
        """The next reply, or None once ``deadline`` (a time.monotonic() value) has passed.

        Replies that are not awaited (the master's keep-alives, another stream's events) do
        not move the deadline. NotRunning once the connection that carried ``request_id``
        has closed and every reply the master sent before has been read.
        """
        while True:
            wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000 + 0.5))
            ready = dict(self._poller.poll(MAX_POLL_MS if wait_ms is None else min(wait_ms, MAX_POLL_MS)))
            if self._socket in ready:
                try:
                    return decode(self._socket.recv(), ControlReply, "control reply")
                except MalformedFrame as exc:
                    raise CommandError(f"unreadable reply from the master: {exc}") from exc
            if self._monitor in ready:
                self._read_monitor()
            if not self._answerable(request_id):
                raise NotRunning(MASTER_GONE)
            if not ready and wait_ms is not None and wait_ms <= MAX_POLL_MS:
                return None

    def _read_monitor(self) -> None:
        while self._monitor.poll(0):
            # A monitor message: (event: uint16, value: int32) then the endpoint, as libzmq sends it.
            # Read here rather than with zmq.utils.monitor, which imports zmq.asyncio and asyncio
            # (30 ms of every CLI start) for its async variant.
            frames = self._monitor.recv_multipart()
            event, _value = struct.unpack("=hi", frames[0][:6])
            if event == zmq.EVENT_DISCONNECTED:
                self._epoch += 1

    def _result(self, request_id: int) -> Any:
        deadline = time.monotonic() + self._timeout
        while True:
            reply = self._recv(deadline, request_id)
            if reply is None:
                raise NotRunning(f"the master did not answer within {self._timeout:.0f} s")
            if reply.events is not None:
                self._early.setdefault(reply.id, []).extend(reply.events)
            elif reply.id == request_id:
                if not reply.ok:
                    raise error_for(reply.code, reply.error)
                return reply.result

    def _next_events(self, request_id: int, timeout: float | None) -> list[Event] | None:
        if self._early.get(request_id):
            return self._early.pop(request_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reply = self._recv(deadline, request_id)
            if reply is None:
                return None
            if reply.events and reply.id == request_id:
                return reply.events


def _fields(request: Request) -> dict[str, Any]:
    """A typed request's fields as the control request's args (nested Structs are encoded as they are)."""
    return {name: getattr(request, name) for name in request.__struct_fields__}


def _run_request(target: Target, fun: str, args: list[Any], kwargs: dict[str, Any], timeout: float | None,
                 wait: bool = True) -> RunRequest:
    """The RunRequest of a job; ``timeout`` None leaves the service's default deadline."""
    if timeout is None:
        return RunRequest(fun, target, args, kwargs, wait=wait)
    return RunRequest(fun, target, args, kwargs, timeout, wait)
