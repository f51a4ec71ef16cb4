"""The publish channel: jobs go out on PUB, sealed with the rotating session key.

A job aimed at named agents is sent on each agent's own topic so that ZeroMQ
filters it at the publisher; a glob or label job goes once on the broadcast
topic and each agent checks the target itself (DESIGN.md, Channels).
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.asyncio

from saltmarsh.pki.files import write_secret
from saltmarsh.pki.keys import Identity
from saltmarsh.protocol.codec import encode
from saltmarsh.protocol.crypto import SESSION_KEY_SIZE, SessionKey
from saltmarsh.protocol.envelope import seal
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
    """Owns the PUB socket and seals jobs with the current session key."""

    def __init__(self, ctx: zmq.asyncio.Context, identity: Identity, sessions: SessionKeys, limits: Limits) -> None:
        self._identity = identity
        self._sessions = sessions
        self._socket = ctx.socket(zmq.PUB)
        harden(self._socket, limits)
        # A slow agent must not make the master buffer without bound; the job
        # stays in the cache and the CLI names the agent that did not answer.
        self._socket.setsockopt(zmq.SNDHWM, 10000)

    def bind(self, interface: str, port: int) -> None:
        """Bind the PUB socket."""
        self._socket.bind(tcp_endpoint(interface, port))

    async def publish(self, job: Job, named: list[str] | None) -> None:
        """Send ``job`` to the ``named`` agents' topics, or on broadcast when None."""
        key = self._sessions.current
        body = key.cipher().encrypt(encode(job))
        frame, _ = seal(self._identity, MASTER_SENDER, Job.KIND, body, key_id=key.key_id)
        topics = [BROADCAST] if named is None else [agent_topic(a) for a in named]
        for topic in topics:
            await self._socket.send_multipart([topic, frame])

    def close(self) -> None:
        """Close the socket."""
        self._socket.close(linger=0)
