"""The publish channel on the agent: receive jobs, check them, hand them to the executor.

A job frame must verify with the trusted master key, be fresh, open, decode
as a Job, and target this agent. A job for everyone comes on the broadcast
topic sealed with the session key; a frame sealed with a newer session key
is kept (a few) while the agent fetches that key, then processed, so a
rotation loses no job. Any other job comes on this agent's own topic with
its job key wrapped for this agent alone (protocol/jobseal.py).
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Callable

import zmq
import zmq.asyncio

from saltmarsh.pki.keys import Identity, curve_public
from saltmarsh.protocol.codec import decode
from saltmarsh.protocol.crypto import PeerCipher, SessionCipher, SessionKey
from saltmarsh.protocol.envelope import Header, parse_outer, verify
from saltmarsh.protocol.errors import MalformedFrame, ProtocolError, UnknownSender, UnknownSessionKey
from saltmarsh.protocol.freshness import ReplayGuard
from saltmarsh.protocol.jobproof import JobProof
from saltmarsh.protocol.jobseal import PRIVATE_JOB_KIND, job_cipher, unwrap_job_key
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.messages import Job
from saltmarsh.protocol.targeting import matches
from saltmarsh.protocol.topics import BROADCAST, agent_topic
from saltmarsh.protocol.transport import harden, reconnect_quickly

from .trust import MasterTrust

log = logging.getLogger(__name__)

HELD_FRAMES = 64


class JobSubscriber:
    """SUB socket for jobs aimed at this agent or at everyone."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        agent_id: str,
        identity: Identity,
        labels: dict[str, str],
        trust: MasterTrust,
        limits: Limits,
        on_job: Callable[[Job, JobProof], None],
        need_key: Callable[[], None],
    ) -> None:
        self._agent_id = agent_id
        self._identity = identity
        self._topic = agent_topic(agent_id)
        self._box: tuple[bytes, PeerCipher] | None = None  # (master key, the Box shared with it)
        self._labels = labels
        self._trust = trust
        self._limits = limits
        self._on_job = on_job
        self._need_key = need_key
        self._guard = ReplayGuard(limits.freshness_seconds)
        self._session: SessionKey | None = None
        self._cipher: SessionCipher | None = None
        self._held: collections.deque[tuple[Header, bytes]] = collections.deque(maxlen=HELD_FRAMES)
        self._socket = ctx.socket(zmq.SUB)
        harden(self._socket, limits)
        reconnect_quickly(self._socket)
        self._socket.setsockopt(zmq.SUBSCRIBE, BROADCAST)
        self._socket.setsockopt(zmq.SUBSCRIBE, self._topic)
        self._socket.connect(endpoint)
        self.rejected = 0

    @property
    def key_id(self) -> bytes:
        """Id of the session key held, or b"" before the first."""
        return self._session.key_id if self._session else b""

    def set_session(self, key: SessionKey) -> None:
        """Use a new session key, then process frames held for it."""
        self._session, self._cipher = key, key.cipher()
        held, self._held = list(self._held), collections.deque(maxlen=HELD_FRAMES)
        for header, frame in held:
            if header.key_id == key.key_id:
                self._guarded(functools.partial(self._open, header, frame))
            else:
                log.warning("dropped a job frame sealed with session key %s, which this agent never held",
                            header.key_id.hex())

    def drop_session(self) -> None:
        """Forget the session key and any held frames (our key was refused).

        Frames held while cut off must not run if the key is accepted again later:
        they were published while this agent was not supposed to receive them.
        """
        self._session, self._cipher = None, None
        self._held.clear()

    def close(self) -> None:
        """Close the socket."""
        self._socket.close(linger=0)

    async def serve(self) -> None:
        """Receive job frames until cancelled."""
        while True:
            parts = await self._socket.recv_multipart()
            self._guarded(functools.partial(self._receive, parts))

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except UnknownSessionKey as exc:
            log.info("%s: fetching the new session key", exc)
            self._need_key()
        except ProtocolError as exc:
            self.rejected += 1
            log.warning("rejected published frame: %s", exc)
        except Exception:  # a bug must not end the jobs task: the agent would stay up but deaf
            log.exception("published frame failed inside the agent")

    def _receive(self, parts: list[bytes]) -> None:
        if len(parts) not in (2, 3):
            raise MalformedFrame(f"{len(parts)} frames in a published message, expected 2 or 3")
        outer = parse_outer(parts[1], self._limits)
        if self._trust.key is None:
            raise UnknownSender("no master key is trusted yet")
        header = verify(outer, self._trust.key)
        self._guard.check(header.sender, header.ts, header.nonce)
        if len(parts) == 3 or header.kind == PRIVATE_JOB_KIND:
            self._open_private(parts, header, self._trust.key)
            return
        if self._session is None or header.key_id != self._session.key_id:
            self._held.append((header, parts[1]))
            raise UnknownSessionKey(header.key_id)
        self._open(header, parts[1])

    def _open(self, header: Header, frame: bytes) -> None:
        if self._session is None or self._cipher is None or header.key_id != self._session.key_id:
            raise UnknownSessionKey(header.key_id)
        if header.kind != Job.KIND:
            raise MalformedFrame(f"unknown published kind {header.kind!r}")
        self._deliver(decode(self._cipher.decrypt(header.body), Job, "job"),
                      JobProof(frame=frame, key=self._session.key))

    def _open_private(self, parts: list[bytes], header: Header, master_key: bytes) -> None:
        # A job sealed for named agents comes only on our own topic, with its key wrapped for us.
        if len(parts) != 3 or parts[0] != self._topic or header.kind != PRIVATE_JOB_KIND:
            raise MalformedFrame(f"a {header.kind!r} frame in {len(parts)} parts on topic {parts[0][:64]!r}: "
                                 f"a private job comes on this agent's topic with its wrapped key")
        job_key = unwrap_job_key(self._master_box(master_key), parts[2], header.nonce)
        self._deliver(decode(job_cipher(job_key).decrypt(header.body), Job, "job"),
                      JobProof(frame=parts[1], key=job_key))

    def _master_box(self, master_key: bytes) -> PeerCipher:
        if self._box is None or self._box[0] != master_key:
            self._box = (master_key, PeerCipher(self._identity.curve_private, curve_public(master_key)))
        return self._box[1]

    def _deliver(self, job: Job, proof: JobProof) -> None:
        # The proof holds the frame as it came (no copy): the setup helper checks it again itself.
        if matches(job.target, self._agent_id, self._labels):
            self._on_job(job, proof)
