"""Per-job sealing on the publish channel: only the agents a job is aimed at can read it.

The publish session key is held by every accepted agent, so a job sealed with it can be read
by any of them, whatever its target (Salt's one AES key for all minions has the same flaw).
A job for anything narrower than every agent is therefore sealed with a fresh random key
instead, and that key is wrapped for each expected agent with the X25519 Box the agent
already shares with the master (the request channel's, so no new key exchange). Each
agent gets the one signed frame on its own topic followed by its own wrapped key::

    [agent topic, signed frame (kind "job.private"), wrapped job key]

ZeroMQ filters topics at the publisher, so an agent's socket never even receives another
agent's wrapped key; and if it did, it could not open it. The wrapped key is authenticated
by the Box (only the master, or the agent itself, can make one that opens) and binds the
signed frame's nonce, so it cannot be moved to another frame. Only ``'*'`` still travels
once on the broadcast topic with the session key: that job is every agent's to read.
"""

from __future__ import annotations

import hmac
import os

from .crypto import CIPHER_OVERHEAD, SESSION_KEY_SIZE, PeerCipher, SessionCipher
from .envelope import NONCE_SIZE
from .errors import UndecryptableBody

PRIVATE_JOB_KIND = "job.private"
# Domain separation: a wrapped job key can never be mistaken for a request-channel body.
WRAP_CONTEXT = b"saltmarsh/job-key/1"
WRAPPED_SIZE = CIPHER_OVERHEAD + len(WRAP_CONTEXT) + SESSION_KEY_SIZE + NONCE_SIZE


def new_job_key() -> bytes:
    """A fresh random key for one job."""
    return os.urandom(SESSION_KEY_SIZE)


def job_cipher(job_key: bytes) -> SessionCipher:
    """The cipher that seals (and opens) the body of one job."""
    return SessionCipher(job_key)


def wrap_job_key(box: PeerCipher, job_key: bytes, frame_nonce: bytes) -> bytes:
    """``job_key`` sealed for the one agent ``box`` is shared with, bound to the frame's nonce."""
    return box.encrypt(WRAP_CONTEXT + job_key + frame_nonce)


def unwrap_job_key(box: PeerCipher, wrapped: bytes, frame_nonce: bytes) -> bytes:
    """Open a wrapped job key; UndecryptableBody unless it is ours and bound to ``frame_nonce``."""
    if len(wrapped) != WRAPPED_SIZE:
        raise UndecryptableBody(f"wrapped job key of {len(wrapped)} bytes, expected {WRAPPED_SIZE}")
    plain = box.decrypt(wrapped)
    context, rest = plain[: len(WRAP_CONTEXT)], plain[len(WRAP_CONTEXT):]
    job_key, nonce = rest[:SESSION_KEY_SIZE], rest[SESSION_KEY_SIZE:]
    if context != WRAP_CONTEXT or not hmac.compare_digest(nonce, frame_nonce):
        raise UndecryptableBody("wrapped job key belongs to another frame")
    return job_key
