"""The publish channel: jobs go out on PUB, each readable only by the agents it is aimed at.

A job for ``'*'`` goes once on the broadcast topic, sealed with the rotating session key
that every accepted agent holds. Any other job (ids, lists, globs, labels: the master has
already resolved them to the accepted agents they name) is sealed with a fresh key that is
wrapped for each of those agents and sent on each one's own topic, so that ZeroMQ filters
it at the publisher and no other agent can open it (protocol/jobseal.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import zmq
import zmq.asyncio

from saltmarsh.pki.files import write_secret
from saltmarsh.pki.keys import Identity
from saltmarsh.protocol.codec import encode
from saltmarsh.protocol.crypto import SESSION_KEY_SIZE, PeerCipher, SessionKey
from saltmarsh.protocol.envelope import seal
from saltmarsh.protocol.jobseal import PRIVATE_JOB_KIND, job_cipher, new_job_key, wrap_job_key
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.messages import Job
from saltmarsh.protocol.topics import BROADCAST, agent_topic
from saltmarsh.protocol.transport import harden, tcp_endpoint

log = logging.getLogger(__name__)

MASTER_SENDER = "master"


class SessionKeys:
    """The current publish session key, persisted so that a master restart keeps it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.current = self._load() or self._new()

    def _load(self) -> SessionKey | None:
        if not self._path.exists():
            return None
        raw = self._path.read_bytes()
        return SessionKey(raw) if len(raw) == SESSION_KEY_SIZE else None

    def _new(self) -> SessionKey:
        key = SessionKey.generate()
        write_secret(self._path, key.key)
        return key

    def rotate(self) -> SessionKey:
        """Replace the session key; agents cut off since can no longer read jobs."""
        self.current = self._new()
        log.info("publish session key rotated (new key id %s)", self.current.key_id.hex())
        return self.current


class Publisher:
    """Owns the PUB socket; seals jobs for everyone with the session key, any other per job."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        identity: Identity,
        sessions: SessionKeys,
        limits: Limits,
        peer_cipher: Callable[[bytes], PeerCipher],
    ) -> None:
        self._identity = identity
        self._sessions = sessions
        self._peer_cipher = peer_cipher
        self._socket = ctx.socket(zmq.PUB)
        harden(self._socket, limits)
        # A slow agent must not make the master buffer without bound; the job
        # stays in the cache and the CLI names the agent that did not answer.
        self._socket.setsockopt(zmq.SNDHWM, 10000)

    def bind(self, interface: str, port: int) -> None:
        """Bind the PUB socket."""
        self._socket.bind(tcp_endpoint(interface, port))

    async def publish(self, job: Job, recipients: Mapping[str, bytes] | None) -> None:
        """Send ``job`` to every agent on broadcast (None), or only to ``recipients`` (id -> public key)."""
        if recipients is None:
            key = self._sessions.current
            frame, _ = seal(self._identity, MASTER_SENDER, Job.KIND, key.cipher().encrypt(encode(job)),
                            key_id=key.key_id)
            await self._socket.send_multipart([BROADCAST, frame])
            return
        job_key = new_job_key()
        frame, nonce = seal(self._identity, MASTER_SENDER, PRIVATE_JOB_KIND, job_cipher(job_key).encrypt(encode(job)))
        for agent_id, public_key in recipients.items():
            wrapped = wrap_job_key(self._peer_cipher(public_key), job_key, nonce)
            await self._socket.send_multipart([agent_topic(agent_id), frame, wrapped])

    def close(self) -> None:
        """Close the socket."""
        self._socket.close(linger=0)
