"""Jobs: run, batches, wait, outcome, list, show, running, kill (master/service/jobs.py, batches.py).

``JobOutcome`` holds the rules of a job's completion, the same for every front end.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from saltmarsh.protocol.bounds import DEFAULT_RUN_TIMEOUT as DEFAULT_RUN_TIMEOUT
from saltmarsh.protocol.bounds import MAX_BATCH_COUNT, MAX_BATCH_PAUSE
from saltmarsh.protocol.jobcontrol import KillReport, RunningJob
from saltmarsh.protocol.messages import Interval, Jid, Target

from ..outcome import OutcomeRules
from . import QUERY_TIMEOUT, Request

MAX_LIST = 100_000  # jobs one job.list returns at most


class RunRequest(Request, frozen=True):
    """Run ``fun`` on ``target``; ``timeout`` is the job's deadline on each agent.

    ``wait`` False (``run --async``): the job goes out and nothing is streamed back.
    """

    command: ClassVar[str] = "run"
    fun: str
    target: Target
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    timeout: Interval = DEFAULT_RUN_TIMEOUT
    wait: bool = True


class BatchSize(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How many agents of a batch run at once: ``count`` of them, or ``percent`` of the expected ones.

    Exactly one is given; the master turns a percentage into a count (master/jobs/batches.py: batch_size).
    """

    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH_COUNT)] | None = None
    percent: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None


class BatchRequest(Request, frozen=True):
    """Run ``fun`` over the target's agents, ``batch`` at a time, pausing ``pause`` s after each."""

    command: ClassVar[str] = "run.batch"
    fun: str
    target: Target
    batch: BatchSize
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    timeout: Interval = DEFAULT_RUN_TIMEOUT
    pause: Annotated[float, msgspec.Meta(ge=0, le=MAX_BATCH_PAUSE)] = 0.0
    fail_fast: bool = False


class JobRequest(Request, frozen=True):
    """A job, by id (``job.show``)."""

    command: ClassVar[str] = "job.show"
    jid: str


class JobSilentRequest(Request, frozen=True):
    """The expected agents that have not answered a job, each with why (``job.silent``)."""

    command: ClassVar[str] = "job.silent"
    jid: str


class OutcomeRequest(Request, frozen=True):
    """What came of a job so far: its returns and why each missing agent is missing (``job.outcome``)."""

    command: ClassVar[str] = "job.outcome"
    jid: Jid


class WaitRequest(Request, frozen=True):
    """A job to wait for; ``timeout`` None waits until the job's own deadline has passed."""

    command: ClassVar[str] = "job.wait"
    jid: Jid
    timeout: Interval | None = None


class JobListRequest(Request, frozen=True):
    """How many of the newest jobs to list (1 to MAX_LIST)."""

    command: ClassVar[str] = "job.list"
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST)] = 50


class RunningRequest(Request, frozen=True):
    """Whose running jobs to list (everyone by default)."""

    command: ClassVar[str] = "job.running"
    target: Target | None = None
    timeout: Interval = QUERY_TIMEOUT


class KillRequest(Request, frozen=True):
    """A job to kill, on ``target`` or else on every expected agent that has not answered it."""

    command: ClassVar[str] = "job.kill"
    jid: Jid
    target: Target | None = None
    timeout: Interval = QUERY_TIMEOUT


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


class JobOutcome(msgspec.Struct, OutcomeRules, kw_only=True):
    """What came of a job: returns by agent, and why each agent that did not answer did not.

    The rules of a job's completion, the same for every front end: ``offline`` holds the expected
    agents the master knew were down when the job went out (not waited for), ``unknown`` the ids
    a list target named that have no accepted key (the job was not sent to them), ``silent``
    every expected agent without a return at the end, ``not_started`` a batch's agents it never
    started, and ``lost`` why the wait was cut short if the master went away meanwhile. An agent
    whose return says it gave up at the job's deadline (TimedOut) did not answer either: it is in
    ``timed_out`` (and ``missing``), not in ``answered``. The rules are OutcomeRules' (master/service/outcome.py).
    """

    jid: str
    expected: list[str]
    returns: dict[str, dict[str, Any]] = {}
    silent: dict[str, str] = {}
    offline: dict[str, str] = {}
    unknown: dict[str, str] = {}
    not_started: dict[str, str] = {}
    lost: str = ""

    @classmethod
    def started(cls, started: JobStarted) -> JobOutcome:
        """An outcome with nothing gathered yet but what the master's reply holds."""
        return cls(jid=started.jid, expected=list(started.expected), returns=dict(started.returns),
                   offline=dict(started.offline), unknown=dict(started.unknown))

    def batch_event(self, tag: str, data: Any) -> bool:
        """Fold one of a batch's events (``saltmarsh/batch/<batch>/…``, protocol/tags.py) in; True at ``done``."""
        parts = tag.split("/")  # saltmarsh/batch/<batch>/<what>[/<agent>]
        what = parts[3] if len(parts) > 3 else ""
        if what == "ret":
            self.returns[data["id"]] = data
        elif what == "silent":
            self.silent[data["id"]] = data["reason"]
        elif what == "done":
            self.not_started.update(data["not_started"])
            return True
        return False

    def batch_over(self) -> None:
        """The batch's end (its ``done``, the wait's end, or the master gone): name every agent without a return.

        Agents known to be down were never started and are named as ``run`` names them (offline
        since …); any other expected agent without a return or a reason is missing for why the
        watch ended.
        """
        self.silent.update(self.offline)
        unanswered = [agent for agent in self.unanswered if agent not in self.missing]
        reason = "the master went away before it answered" if self.lost else "the batch ended without it"
        self.silent.update({agent: reason for agent in unanswered})


class RunningReply(msgspec.Struct, frozen=True):
    """The reply to ``job.running``: each answering agent's jobs, and why each other agent is missing."""

    running: dict[str, list[RunningJob]]
    missing: dict[str, str] = {}


class KillReply(msgspec.Struct, frozen=True):
    """The reply to ``job.kill``: what each agent did, and why each other agent is missing."""

    jid: str
    reports: dict[str, KillReport]
    missing: dict[str, str] = {}


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


class JobSummary(msgspec.Struct, frozen=True):
    """One line of ``job.list``: a job, its target, when it was made, how many agents were expected and answered."""

    jid: str
    fun: str
    target: dict[str, Any]
    created: float
    expected: int
    returned: int


class JobView(msgspec.Struct, frozen=True):
    """The reply to ``job.show``: a job, its expected agents, every return, and why each silent agent is silent.

    ``running`` holds, for the silent agents that still run it (asked before its deadline), what they said.
    """

    jid: str
    fun: str
    args: list[Any]
    kwargs: dict[str, Any]
    target: dict[str, Any]
    created: str
    expected: list[str]
    returns: dict[str, dict[str, Any]]
    silent: dict[str, str]
    running: dict[str, dict[str, Any]]
