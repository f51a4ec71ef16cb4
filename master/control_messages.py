"""Messages between local clients (CLI, Python API) and the master's control socket.

The control socket is a local IPC socket whose file permissions are its access
control, so these frames are not signed; they are still size-limited and
schema-checked like everything the master reads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from saltmarsh.protocol.bounds import MAX_BATCH_COUNT
from saltmarsh.protocol.jobcontrol import KillReport, RunningJob

MAX_CONTROL_FRAME = 1024 * 1024
# libzmq drops a frame over its MAXMSGSIZE unread, with the connection, so nobody learns why;
# it is set this far above our own limit so that the master reads, logs and answers a request
# that is only too large, and the transport still drops a flood before Python allocates it.
CONTROL_TRANSPORT_MAX = 2 * MAX_CONTROL_FRAME


class Event(msgspec.Struct, frozen=True):
    """One event of the master's bus: its tag, its data, when it happened, and which agent (if any) raised it."""

    tag: str
    data: Any
    ts: float
    agent: str = ""


class ControlRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Client -> master: run command ``cmd`` with ``args``; ``id`` pairs replies with it."""

    id: int
    cmd: Annotated[str, msgspec.Meta(max_length=64)]
    args: dict[str, Any] = {}


class ControlReply(msgspec.Struct, frozen=True):
    """Master -> client: the outcome of request ``id``, or (``events`` set) streamed events."""

    id: int
    ok: bool = True
    result: Any = None
    error: str = ""
    events: list[Event] | None = None


class RequestId(msgspec.Struct, frozen=True):
    """Just the ``id`` of a request the master refuses unread (too large, or malformed), to answer it."""

    id: int


# ---- results of the job-control commands (master/commands/jobs.py) ---------------------------


class JobStarted(msgspec.Struct, frozen=True):
    """The reply to ``run`` and ``job.wait``: the job, who is expected, and who will not answer.

    ``offline`` are expected agents the master knows are down (not waited for), ``unknown`` ids a
    list target named that have no accepted key (never sent the job). ``job.wait`` also gives the
    returns the cache holds already and ``wait``, the seconds to wait for the others.
    """

    jid: str
    expected: list[str]
    offline: dict[str, str] = {}
    unknown: dict[str, str] = {}
    returns: dict[str, dict[str, Any]] = {}
    wait: float = 0.0


class RunningReply(msgspec.Struct, frozen=True):
    """The reply to ``job.running``: each answering agent's jobs, and why each other agent is missing."""

    running: dict[str, list[RunningJob]]
    missing: dict[str, str] = {}


class KillReply(msgspec.Struct, frozen=True):
    """The reply to ``job.kill``: what each agent did, and why each other agent is missing."""

    jid: str
    reports: dict[str, KillReport]
    missing: dict[str, str] = {}


# ---- batches (master/batch.py, master/commands/batch.py) ------------------------------------


class BatchSize(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How many agents of a batch run at once: ``count`` of them, or ``percent`` of the expected ones.

    Exactly one is given; the master turns a percentage into a count (master/batch.py: batch_size).
    """

    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH_COUNT)] | None = None
    percent: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None


class BatchStarted(msgspec.Struct, frozen=True):
    """The reply to ``run.batch``: the batch, who is expected, who will not answer, and how many at once.

    ``batch`` names the batch's events (``saltmarsh/batch/<batch>/…``, protocol/tags.py); each agent's
    own job has its own jid (in its ``start`` event). ``offline`` and ``unknown`` are as in JobStarted:
    those agents are never started. ``wait`` is the longest the whole batch can take.
    """

    batch: str
    expected: list[str]
    size: int
    wait: float
    offline: dict[str, str] = {}
    unknown: dict[str, str] = {}


# ---- the fleet view (master/commands/agents.py) ---------------------------------------------

AgentStatus = Literal["up", "down", "never connected"]


class AgentView(msgspec.Struct, frozen=True, kw_only=True):
    """One agent as the master knows it (``agent.list`` and ``agent.show``); times are seconds since the epoch.

    ``since`` is when it came up (``state`` "up") or went down ("down"); None if it never connected
    to this master, or (up) if it came up before a master restart. ``address`` is where its last
    hello came from since the master started. ``running`` counts the jobs it holds (queued or
    running) by its own word, ``abandoned`` the stuck threads it gave up on; both None when it was
    not asked (down, key not accepted) or did not answer, with why in ``running_note``. ``libvirt``
    is None for an agent that is no hypervisor the inventory knows (a guest, or no snapshot yet).
    """

    id: str
    key: str
    state: AgentStatus
    since: float | None
    last_seen: float | None
    first_seen: float | None
    labels: dict[str, str]
    version: str
    address: str
    role: Literal["hypervisor", "guest"]
    fingerprint: str
    running: int | None = None
    abandoned: int | None = None
    running_note: str = ""
    libvirt: bool | None = None
    libvirt_error: str = ""
    maintenance: bool = False
