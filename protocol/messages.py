"""Message schemas of the request and publish channels, one Struct per message kind.

Each Struct is the decoded body of a frame whose header ``kind`` equals the
Struct's ``KIND``. Unknown fields, wrong types and over-long values are refused
by the decoder (see codec.py). Direction and cipher are noted on each.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from .bounds import MAX_INTERVAL
from .limits import MAX_FUNCTION_NAME, MAX_ID_LENGTH, MAX_TAG_LENGTH

AgentId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TAG_LENGTH)]
FunctionName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_FUNCTION_NAME)]
ShortText = Annotated[str, msgspec.Meta(max_length=256)]
Labels = Annotated[
    dict[Annotated[str, msgspec.Meta(max_length=64)], Annotated[str, msgspec.Meta(max_length=256)]],
    msgspec.Meta(max_length=64),
]
# Patterns end in \Z, not $: msgspec matches with re.search, where $ also matches before a
# trailing newline, so "<jid>\n" would pass as a jid (and reach log lines and event tags).
Jid = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{20,26}\Z")]


class Message(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Base of every message body; ``KIND`` is the header kind it travels under."""

    KIND: ClassVar[str] = ""


# ---- agent -> master, request channel ------------------------------------------------


class Hello(Message, frozen=True):
    """Agent -> master, plaintext: submit the agent's key and ask for the session key.

    The only message an unaccepted key may send. The envelope presents the
    public key and is signed by it (proof of possession).
    """

    KIND: ClassVar[str] = "hello"
    labels: Labels = {}
    version: ShortText = ""
    # A one-time join token (``saltmarsh key token``), sealed to the master's key so that only
    # the master can read it; it gets this key accepted on first contact.
    token: Annotated[bytes, msgspec.Meta(max_length=256)] = b""


class Heartbeat(Message, frozen=True):
    """Agent -> master, Box: I am alive; ``key_id`` is the session key I hold."""

    KIND: ClassVar[str] = "heartbeat"
    key_id: Annotated[bytes, msgspec.Meta(max_length=16)] = b""


# Times and durations on the wire are finite and not negative: a NaN would pass every
# comparison it meets and print as invalid JSON (``job show --json``).
Seconds = Annotated[float, msgspec.Meta(ge=0, le=1e11)]
Interval = Annotated[float, msgspec.Meta(gt=0, le=MAX_INTERVAL)]


class ErrorInfo(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A structured error: what kind of failure and its message (no traceback)."""

    type: ShortText
    message: Annotated[str, msgspec.Meta(max_length=4096)]


class JobReturn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One agent's answer to one job."""

    jid: Jid
    fun: FunctionName
    success: bool
    result: Any = None
    error: ErrorInfo | None = None
    started: Seconds = 0.0
    duration: Seconds = 0.0


class Returns(Message, frozen=True):
    """Agent -> master, Box: job returns; acknowledged by jid once persisted."""

    KIND: ClassVar[str] = "returns"
    returns: Annotated[list[JobReturn], msgspec.Meta(min_length=1, max_length=1000)]


# An event's id in its agent's stream: ascending in firing order, 0 for an event without one.
EventSeq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class AgentEvent(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """An event fired on an agent; ``seq`` identifies it so that a batch sent twice is relayed once."""

    tag: Tag
    data: Any = None
    ts: Seconds = 0.0
    seq: EventSeq = 0


class Events(Message, frozen=True):
    """Agent -> master, Box: a batch of events (batched so one signature covers many).

    ``stream`` names the agent's event stream (made with its spool; a new one means the
    agent's ids started again) and ``floor`` is the lowest id the agent may still send:
    everything below it was acknowledged or given up, so the master forgets those ids.
    Acknowledged with an Ack once relayed; a duplicate is acknowledged and not relayed.
    """

    KIND: ClassVar[str] = "events"
    events: Annotated[list[AgentEvent], msgspec.Meta(min_length=1, max_length=1000)]
    stream: EventSeq = 0
    floor: EventSeq = 0


# ---- master -> agent, request channel ---------------------------------------------------


class Welcome(Message, frozen=True):
    """Master -> agent, Box: the key's state and, once accepted, the publish session key."""

    KIND: ClassVar[str] = "welcome"
    state: Annotated[str, msgspec.Meta(pattern=r"^(pending|accepted|rejected|conflict)\Z")]
    session_key: Annotated[bytes, msgspec.Meta(max_length=32)] = b""
    heartbeat_seconds: Interval = 10.0
    reason: ShortText = ""


class Ack(Message, frozen=True):
    """Master -> agent, Box: these jids' returns (or this events batch) are persisted."""

    KIND: ClassVar[str] = "ack"
    jids: list[Jid] = []
    key_id: Annotated[bytes, msgspec.Meta(max_length=16)] = b""


class InventoryCheck(Message, frozen=True):
    """Master -> agent, Box, pushed: the digest of the inventory the master holds of this hypervisor.

    Sent when the agent comes up (protocol/inventory.py); the agent pushes its full inventory
    (the ``saltmarsh/virt/<agent>/inventory`` event) only if its own digest differs. An empty
    digest means the master holds nothing of it.
    """

    KIND: ClassVar[str] = "inventory_check"
    digest: Annotated[bytes, msgspec.Meta(max_length=32)] = b""


class Refused(Message, frozen=True):
    """Master -> agent, Box: the request was refused; the agent must authenticate again."""

    KIND: ClassVar[str] = "refused"
    reason: ShortText


# ---- master -> agents, publish channel ------------------------------------------------


class Target(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Which agents a job is for: an id, a glob, a list of ids, or labels."""

    kind: Annotated[str, msgspec.Meta(pattern=r"^(id|glob|list|labels)\Z")]
    ids: Annotated[list[AgentId], msgspec.Meta(max_length=10000)] = []
    pattern: Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)] = ""
    labels: Labels = {}


class Job(Message, frozen=True):
    """Master -> agents, session key: run ``fun`` with args on the targeted agents."""

    KIND: ClassVar[str] = "job"
    jid: Jid
    fun: FunctionName
    target: Target
    args: Annotated[list[Any], msgspec.Meta(max_length=256)] = []
    kwargs: Annotated[dict[Annotated[str, msgspec.Meta(max_length=64)], Any], msgspec.Meta(max_length=256)] = {}
    # The job's deadline on each agent, counted from when it received the job (protocol/jobcontrol.py).
    timeout: Interval = 30.0


# ---- the image file server (master:// images), request channel, Box -------------------

FilePath = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
MAX_CHUNK = 2 * 1024 * 1024


class FileStat(Message, frozen=True):
    """Agent -> master: describe the file at ``path`` under the master's file roots."""

    KIND: ClassVar[str] = "file_stat"
    path: FilePath


class FileInfo(Message, frozen=True):
    """Master -> agent: size, sha256 of the whole, and the BLAKE3 digest of every chunk (``chunk_digest``)."""

    KIND: ClassVar[str] = "file_info"
    path: FilePath
    size: Annotated[int, msgspec.Meta(ge=0)]
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]
    chunk_size: Annotated[int, msgspec.Meta(ge=1, le=MAX_CHUNK)]
    chunks: Annotated[list[Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]],
                      msgspec.Meta(max_length=120_000)]


class FileRead(Message, frozen=True):
    """Agent -> master: send chunk ``index`` of ``path``."""

    KIND: ClassVar[str] = "file_read"
    path: FilePath
    index: Annotated[int, msgspec.Meta(ge=0)]


class FileData(Message, frozen=True):
    """Master -> agent: one chunk."""

    KIND: ClassVar[str] = "file_data"
    index: Annotated[int, msgspec.Meta(ge=0)]
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_CHUNK)]


class Failed(Message, frozen=True):
    """Master -> agent: this request cannot be served (the reason is for the agent's log)."""

    KIND: ClassVar[str] = "failed"
    reason: Annotated[str, msgspec.Meta(max_length=512)]


# ---- libvirt TLS certificates from the master's CA, request channel, Box ---------------

Pem = Annotated[bytes, msgspec.Meta(max_length=16 * 1024)]


class CertRequest(Message, frozen=True):
    """Agent -> master: sign these CSRs (the agent's own keys) for libvirt's server and client roles."""

    KIND: ClassVar[str] = "cert_request"
    server_csr: Pem
    client_csr: Pem


class CertIssued(Message, frozen=True):
    """Master -> agent: the signed certificates, the CA certificate and the current CRL."""

    KIND: ClassVar[str] = "cert_issued"
    ca_cert: Pem
    server_cert: Pem
    client_cert: Pem
    crl: Annotated[bytes, msgspec.Meta(max_length=1024 * 1024)]


class CrlRequest(Message, frozen=True):
    """Agent -> master: send the current CRL."""

    KIND: ClassVar[str] = "crl_request"


class CrlData(Message, frozen=True):
    """Master -> agent: the current CRL (PEM)."""

    KIND: ClassVar[str] = "crl_data"
    crl: Annotated[bytes, msgspec.Meta(max_length=1024 * 1024)]


REQUEST_KINDS: dict[str, type[Message]] = {
    m.KIND: m for m in (Hello, Heartbeat, Returns, Events, FileStat, FileRead, CertRequest, CrlRequest)
}
REPLY_KINDS: dict[str, type[Message]] = {
    m.KIND: m for m in (Welcome, Ack, Refused, InventoryCheck, FileInfo, FileData, Failed, CertIssued, CrlData)
}
