"""The setup helper's socket protocol: length-prefixed msgpack frames over a Unix stream socket.

The agent sends one HelperRequest: the ``host.setup`` job as the master signed it (the helper
reads the states from it, never from the agent: authority.py); the helper answers with a
HelperReply per state as each is done (so progress streams as the run goes), then one holding
SetupDone, and closes. A guarded
network change asks in between (``confirm``) whether the agent reaches the master again; the
agent answers with a Confirmed frame once it did (and not at all if it does not). Frames are
bounded both ways and decoded strictly (protocol/codec.py): the helper runs as root and reads
nothing it has not checked.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Annotated

import msgspec

from saltmarsh.protocol.errors import MalformedFrame
from saltmarsh.protocol.jobproof import JobProof
from saltmarsh.protocol.states import SetupDone, StateResult

HEADER = 4
# Where the helper listens and the agent connects (setup-helper.yaml and agent.yaml both default to it).
SETUP_SOCKET = "/run/saltmarsh-setup/setup.sock"
MAX_FRAME = 2 * 1024 * 1024  # a request of 256 states with their files' contents fits with room


class HelperRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Agent -> helper: run the master's job in ``proof``; ``master_ip``: the master as this host reaches it.

    ``master_ip`` only decides which bridge changes are guarded by a rollback timer: an agent that
    lies about it can strand its own host, not gain anything the master did not sign.
    """

    proof: JobProof
    master_ip: Annotated[str, msgspec.Meta(max_length=45)] = ""


class ConfirmAsk(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Helper -> agent: state ``state`` changed the network; answer Confirmed within ``seconds`` or it is undone."""

    state: str
    seconds: float


class Confirmed(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Agent -> helper, during a run: the agent reached the master again after ``state`` was applied."""

    state: str


class HelperReply(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Helper -> agent: one state's result, a question (``confirm``), or (``done``) the end of the run."""

    result: StateResult | None = None
    confirm: ConfirmAsk | None = None
    done: SetupDone | None = None


def frame(body: bytes) -> bytes:
    """``body`` with its length before it."""
    if len(body) > MAX_FRAME:
        raise MalformedFrame(f"a frame of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    return len(body).to_bytes(HEADER, "big") + body


def _length(header: bytes) -> int:
    length = int.from_bytes(header, "big")
    if length > MAX_FRAME:
        raise MalformedFrame(f"the peer announced a frame of {length} bytes, over the {MAX_FRAME}-byte limit")
    return length


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next frame's body; MalformedFrame if it is too large, IncompleteReadError if the peer left."""
    return await reader.readexactly(_length(await reader.readexactly(HEADER)))


def recv_frame(sock: socket.socket) -> bytes | None:
    """The next frame's body from a blocking socket, or None if the peer closed before a new frame."""
    header = _recv_exactly(sock, HEADER)
    if header is None:
        return None
    length = _length(header)
    body = _recv_exactly(sock, length) if length else b""
    if body is None:
        raise MalformedFrame("the peer closed the connection inside a frame")
    return body


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes; None if the peer closed before the first; MalformedFrame if it closed after."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            if chunks:
                raise MalformedFrame("the peer closed the connection inside a frame")
            return None
        chunks += chunk
    return bytes(chunks)
