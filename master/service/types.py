"""Typed requests and results of the service layer: what an operator can ask the master, and its answers.

Every front end builds these: the CLI (master/cli/, through master/client.py), the control socket
(master/control.py, which decodes a request's ``args`` into the type its command names), and the
HTTP API to come. Each request names its command (``command``) and carries its own defaults, so
every default is written here, once: a front end that leaves a field out gets the same request
as one that types the CLI's. Light on purpose (msgspec and the protocol's schemas only): the CLI
imports it on every call.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from saltmarsh.protocol.bounds import MAX_BATCH_COUNT, MAX_BATCH_PAUSE
from saltmarsh.protocol.jobcontrol import TIMED_OUT, KillReport, RunningJob
from saltmarsh.protocol.messages import Interval, Jid, Target

# ---- defaults written once ------------------------------------------------------------------

# A job's deadline on each agent when none is given (``saltmarsh run`` without --timeout).
DEFAULT_RUN_TIMEOUT = 10.0
# How long job.running, job.kill, job.show and agent.list wait for the agents they ask (they
# answer from their quick lane, in milliseconds, even with every worker stuck).
QUERY_TIMEOUT = 5.0
MAX_LIST = 100_000  # jobs one job.list returns at most
MAX_DOWNTIME_MS = 3_600_000  # an hour of downtime is an offline migration
MAX_BANDWIDTH_MIB = 1 << 20  # 1 TiB/s: no link is faster; 0 leaves it to libvirt
MAX_CONSOLE_LINES = 10_000


class Request(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Base of every request; ``command`` is its name on the control socket (and its HTTP operation's id)."""

    command: ClassVar[str] = ""


# ---- jobs (master/service/jobs.py) ----------------------------------------------------------


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

    Exactly one is given; the master turns a percentage into a count (master/batch.py: batch_size).
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


def error_type(ret: dict[str, Any]) -> str:
    """The error type of a failed return ("" for a success)."""
    error = ret.get("error")
    return str(error.get("type", "")) if not ret.get("success") and isinstance(error, dict) else ""


class JobOutcome(msgspec.Struct, kw_only=True):
    """What came of a job: returns by agent, and why each agent that did not answer did not.

    The rules of a job's completion, the same for every front end: ``offline`` holds the expected
    agents the master knew were down when the job went out (not waited for), ``unknown`` the ids
    a list target named that have no accepted key (the job was not sent to them), ``silent``
    every expected agent without a return at the end, ``not_started`` a batch's agents it never
    started, and ``lost`` why the wait was cut short if the master went away meanwhile. An agent
    whose return says it gave up at the job's deadline (TimedOut) did not answer either: it is in
    ``timed_out`` (and ``missing``), not in ``answered``.
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

    @property
    def awaited(self) -> set[str]:
        """The agents worth waiting for: expected and not known to be down."""
        return set(self.expected) - set(self.offline)

    @property
    def waiting(self) -> bool:
        """True while an awaited agent has not answered (nor given up)."""
        return not self.awaited <= set(self.returns)

    @property
    def timed_out(self) -> dict[str, str]:
        """Agents that gave up on the job at its deadline, with what each said."""
        return {agent: f"timed out on the agent: {ret['error']['message']}"
                for agent, ret in self.returns.items() if error_type(ret) == TIMED_OUT}

    @property
    def answered(self) -> dict[str, dict[str, Any]]:
        """The returns of the agents that answered (with a result, or an error other than TimedOut)."""
        return {agent: ret for agent, ret in self.returns.items() if error_type(ret) != TIMED_OUT}

    @property
    def unanswered(self) -> list[str]:
        """Expected agents without a return."""
        return [agent for agent in self.expected if agent not in self.returns]

    @property
    def missing(self) -> dict[str, str]:
        """Every agent the job named that did not answer, with the reason."""
        return {**self.unknown, **self.silent, **self.timed_out,
                **{agent: f"not started: {why}" for agent, why in self.not_started.items()}}

    @property
    def complete(self) -> bool:
        """True if every agent the job named answered."""
        return not self.lost and not self.missing and set(self.expected) <= set(self.returns)

    def master_gone(self, reason: str) -> None:
        """The master went away under the wait: every agent still without a return is silent for that."""
        self.lost = reason
        self.silent = {agent: "the master went away before it answered" for agent in self.unanswered}


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


# ---- keys (master/service/keys.py) ----------------------------------------------------------

DEFAULT_TOKEN_TTL = 3600.0  # a join token's life when none is given


class KeyListRequest(Request, frozen=True):
    """Every key id, by state."""

    command: ClassVar[str] = "key.list"


class KeyAcceptRequest(Request, frozen=True):
    """Accept one key (``id``) or every pending key (``all``)."""

    command: ClassVar[str] = "key.accept"
    id: str = ""
    all: bool = False


class KeyRejectRequest(Request, frozen=True):
    """Reject one key; an accepted agent stops receiving jobs from the next one on."""

    command: ClassVar[str] = "key.reject"
    id: str = ""


class KeyDeleteRequest(Request, frozen=True):
    """Delete one key; an accepted agent stops receiving jobs from the next one on."""

    command: ClassVar[str] = "key.delete"
    id: str = ""


class KeyFingerRequest(Request, frozen=True):
    """Fingerprints: of one agent's key (``id``), or of the master and every agent."""

    command: ClassVar[str] = "key.finger"
    id: str = ""


class TokenRequest(Request, frozen=True):
    """A one-time join token for agent ``id``, valid ``ttl`` seconds (at most MAX_TOKEN_TTL)."""

    command: ClassVar[str] = "key.token"
    id: str
    ttl: float = DEFAULT_TOKEN_TTL


# ---- the fleet view (master/service/agents.py) ----------------------------------------------

AgentStatus = Literal["up", "down", "never connected"]


class AgentListRequest(Request, frozen=True):
    """Which agents to show (every known one by default) and how long to wait for their job counts."""

    command: ClassVar[str] = "agent.list"
    target: Target | None = None
    timeout: Interval = QUERY_TIMEOUT


class AgentShowRequest(Request, frozen=True):
    """One agent, by id."""

    command: ClassVar[str] = "agent.show"
    id: str
    timeout: Interval = QUERY_TIMEOUT


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


# ---- the cloud controller (master/service/vms.py) -------------------------------------------


class HostInfoRequest(Request, frozen=True):
    """Every hypervisor: node facts, free memory and CPUs, VM count, up, maintenance."""

    command: ClassVar[str] = "virt.host_info"


class VmListRequest(Request, frozen=True):
    """Every VM per hypervisor, with its state."""

    command: ClassVar[str] = "virt.list"


class QueryRequest(Request, frozen=True):
    """Per hypervisor and VM: CPU, memory, state, graphics, disks, NICs (one VM if ``name``)."""

    command: ClassVar[str] = "virt.query"
    name: str | None = None


class InitRequest(Request, frozen=True):
    """``virt init``: a VM to place (or put on ``host``) and create; ``dry_run`` explains the placement only.

    The one definition of the request: the CLI builds it, the control socket decodes it, and the
    controller (master/controller.py) takes it as it is.
    """

    command: ClassVar[str] = "virt.init"
    name: str
    cpus: int
    memory_mib: int
    image: str | None = None
    host: str | None = None
    labels: dict[str, str] = {}
    nic_profile: str = "default"
    disk_profile: str = "default"
    enable_qcow: bool = False
    enable_vnc: bool = False
    seed: bool = False
    master_address: str | None = None  # what a seeded guest's agent is told (master/seeding.py)
    dry_run: bool = False
    timeout: Interval = 600.0

    @property
    def options(self) -> dict[str, Any]:
        """The agent's ``virt.init`` options this request carries (profiles, qcow, vnc, seed)."""
        return {"nic_profile": self.nic_profile, "disk_profile": self.disk_profile, "enable_qcow": self.enable_qcow,
                "enable_vnc": self.enable_vnc, "seed": self.seed}


class OpRequest(Request, frozen=True):
    """``op`` (start|shutdown|stop|reboot|reset|pause|resume|purge|info|vnc) on VM ``name``."""

    command: ClassVar[str] = "virt.op"
    op: str
    name: str
    timeout: Interval = 120.0


class ConsoleLogRequest(Request, frozen=True):
    """The last ``lines`` lines of VM ``name``'s serial console."""

    command: ClassVar[str] = "virt.console_log"
    name: str
    lines: Annotated[int, msgspec.Meta(ge=1, le=MAX_CONSOLE_LINES)] = 50


class WaitJoinedRequest(Request, frozen=True):
    """Wait for the agent inside seeded VM ``name`` to join."""

    command: ClassVar[str] = "virt.wait_joined"
    name: str
    timeout: Interval = 300.0


class MigrateRequest(Request, frozen=True):
    """``virt migrate``: VM ``name`` to hypervisor ``target`` over libvirt TLS."""

    command: ClassVar[str] = "virt.migrate"
    name: str
    target: str
    offline: bool = False
    copy_storage: Literal["", "all", "inc"] = ""
    max_downtime_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_DOWNTIME_MS)] = 0
    bandwidth_mib: Annotated[int, msgspec.Meta(ge=0, le=MAX_BANDWIDTH_MIB)] = 0
    postcopy: bool = False
    dry_run: bool = False
    timeout: Interval = 600.0


class MigrateAbortRequest(Request, frozen=True):
    """Abort the running migration of VM ``name``."""

    command: ClassVar[str] = "virt.migrate_abort"
    name: str = ""


# ---- hosts (master/service/hosts.py) --------------------------------------------------------


class MaintenanceRequest(Request, frozen=True):
    """Maintenance on or off for hypervisor ``host`` (placement skips one in maintenance)."""

    command: ClassVar[str] = "host.maintenance"
    host: str
    state: Literal["on", "off"]


class RoleRequest(Request, frozen=True):
    """Whether accepted agent ``id`` is a hypervisor or a guest (one that joined by token)."""

    command: ClassVar[str] = "host.role"
    id: str
    role: Literal["hypervisor", "guest"]


class SetupRequest(Request, frozen=True):
    """``host setup``: bring the targeted hosts to their profiles (``dry_run``: only say what would change)."""

    command: ClassVar[str] = "host.setup"
    target: Target
    profile: str | None = None
    dry_run: bool = False
    timeout: Interval = 1800.0  # packages on a fresh host over a slow mirror


# ---- PKI, events, the master itself (pki.py, events.py) --------------------------------------


class PkiStatusRequest(Request, frozen=True):
    """The CA's subject and expiry, and every certificate it issued."""

    command: ClassVar[str] = "pki.status"


class SubscribeRequest(Request, frozen=True):
    """Events whose tag matches ``pattern``: a prefix, or a glob over the whole tag; empty for every event."""

    command: ClassVar[str] = "events.subscribe"
    pattern: str = ""


class PingRequest(Request, frozen=True):
    """Is the master up? Its fingerprint and counters."""

    command: ClassVar[str] = "master.ping"
