"""A job as the master signed it, for another process on the agent's host to check: the setup helper.

The helper runs as root and must not take the agent's word for what to do: anything running
as the agent's user could otherwise ask it for root file writes. So the agent forwards the
published frame exactly as it arrived, with the key that opens its body (the job's own key,
unwrapped for this agent alone, or the session key of a job for every agent). The holder then
checks what the agent checked: the master's Ed25519 signature over the header (with the master
key it pinned itself), the body against its signed digest, the body opens and decodes as a Job.
Only the master can make such a frame, and only an agent the job was sealed for can hand over a
key that opens it. Freshness (the header's timestamp, and each jid used once) is the holder's.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .codec import decode
from .crypto import SESSION_KEY_SIZE, SessionCipher
from .envelope import Header, parse_outer, verify
from .errors import MalformedFrame
from .jobseal import PRIVATE_JOB_KIND
from .limits import Limits
from .messages import Job


class JobProof(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The signed frame a job came in, and the key that opens its body."""

    frame: Annotated[bytes, msgspec.Meta(max_length=Limits.max_frame)]
    key: Annotated[bytes, msgspec.Meta(min_length=SESSION_KEY_SIZE, max_length=SESSION_KEY_SIZE)]


def open_job(proof: JobProof, master_key: bytes, limits: Limits) -> tuple[Header, Job]:
    """The verified header and the Job; BadSignature, MalformedFrame or UndecryptableBody if it is not the master's."""
    header = verify(parse_outer(proof.frame, limits), master_key)
    if header.kind not in (Job.KIND, PRIVATE_JOB_KIND):
        raise MalformedFrame(f"a {header.kind!r} frame is no job")
    return header, decode(SessionCipher(proof.key).decrypt(header.body), Job, "job")
