"""The publish channel on the agent: receive jobs, check them, hand them to the executor.

A job frame must verify with the trusted master key, be fresh, open, decode
as a Job, and target this agent. A job for everyone comes on the broadcast
topic sealed with the session key; a frame sealed with a newer session key
is kept (a few) while the agent fetches that key, then processed, so a
rotation loses no job. Any other job comes on this agent's own topic with
its job key wrapped for this agent alone (protocol/jobseal.py).

The socket is idle between jobs, so a path that dropped without a FIN or RST would leave
it on a dead connection for good: ZMTP heartbeats find that (protocol/transport.py), a
monitor logs each connection lost and made again, and ``reopen`` replaces the socket when
the request channel finds the master back while this one never saw its connection drop.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import struct
import time
from collections.abc import Callable

import zmq
import zmq.asyncio

from saltmarsh.pki.keys import Identity, curve_public
from saltmarsh.protocol.codec import decode
from saltmarsh.protocol.crypto import PeerCipher, SessionCipher, SessionKey
from saltmarsh.protocol.daemon import cancel_and_wait
from saltmarsh.protocol.envelope import Header, parse_outer
from saltmarsh.protocol.errors import MalformedFrame, ProtocolError, UnknownSender, UnknownSessionKey
from saltmarsh.protocol.freshness import ReplayGuard
from saltmarsh.protocol.jobproof import JobProof
from saltmarsh.protocol.jobseal import PRIVATE_JOB_KIND, job_cipher, unwrap_job_key
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.messages import Job
from saltmarsh.protocol.targeting import matches
from saltmarsh.protocol.topics import BROADCAST, agent_topic
from saltmarsh.protocol.transport import LinkHeartbeat, harden, keep_alive, reconnect_quickly

from .trust import MasterTrust
from .verified import VerifiedFrames

log = logging.getLogger(__name__)

HELD_FRAMES = 64
WATCHED = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
REOPEN_RETRY_SECONDS = 1.0


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
        link: LinkHeartbeat,
        on_job: Callable[[Job, JobProof], None],
        need_key: Callable[[], None],
        verified: VerifiedFrames,
    ) -> None:
        self._verified = verified
        self._ctx, self._endpoint, self._link = ctx, endpoint, link
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
        self._reopen = asyncio.Event()
        self._socket, self._monitor = self._connect()
        self.rejected = 0
        # time.monotonic() of the last handshake with the master on this socket (0: none yet),
        # and of the last connection made or lost.
        self.connected_at = 0.0
        self.changed_at = 0.0
        self.reopened = 0

    def _connect(self) -> tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]:
        socket = self._ctx.socket(zmq.SUB)
        harden(socket, self._limits)
        reconnect_quickly(socket)
        keep_alive(socket, self._link)
        socket.setsockopt(zmq.SUBSCRIBE, BROADCAST)
        socket.setsockopt(zmq.SUBSCRIBE, self._topic)
        monitor = socket.get_monitor_socket(WATCHED)
        socket.connect(self._endpoint)
        return socket, monitor

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
        self._close()

    def _close(self) -> None:
        if not self._socket.closed:  # closed already if no new socket could be had (_connect_again)
            self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close(linger=0)

    def reopen(self, reason: str) -> None:
        """Replace the socket (and its connection) with a new one; ``reason`` is logged."""
        log.warning("opening a new job subscription to %s: %s", self._endpoint, reason)
        self._reopen.set()

    async def serve(self) -> None:
        """Receive job frames until cancelled, on a new socket each time ``reopen`` asks for one."""
        while True:
            tasks = [asyncio.create_task(self._receive_on(self._socket), name="jobs-receive"),
                     asyncio.create_task(self._watch(self._monitor), name="jobs-monitor"),
                     asyncio.create_task(self._reopen.wait(), name="jobs-reopen")]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(tasks)
            for task in done:
                task.result()  # a receive task that failed ends serve with its error
            self._reopen.clear()
            self._close()
            self._socket, self._monitor = await self._connect_again()
            self.reopened += 1

    async def _connect_again(self) -> tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]:
        # Failing here (libzmq's socket or file limit) must not end serve: the agent would be deaf.
        while True:
            try:
                return self._connect()
            except zmq.ZMQError as exc:
                log.error("cannot open a job subscription to %s (%s); retrying in %g s",
                          self._endpoint, exc, REOPEN_RETRY_SECONDS)
                await asyncio.sleep(REOPEN_RETRY_SECONDS)

    async def _receive_on(self, socket: zmq.asyncio.Socket) -> None:
        while True:
            parts = await socket.recv_multipart()
            self._guarded(functools.partial(self._receive, parts))

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        """Log each connection to the master lost and made again (libzmq reconnects by itself)."""
        lost = False
        while True:
            # A monitor message: (event: uint16, value: int32) then the endpoint, as libzmq sends it.
            frames = await monitor.recv_multipart()
            event, _value = struct.unpack("=hi", frames[0][:6])
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected_at = time.monotonic()
                if lost:
                    log.info("job subscription to %s connected again", self._endpoint)
                lost = False
            elif event == zmq.EVENT_DISCONNECTED and not lost:
                lost = True
                log.warning("job subscription to %s lost (%s); reconnecting", self._endpoint, self._why_lost())
            self.changed_at = time.monotonic()

    def _why_lost(self) -> str:
        if self._link.interval <= 0:
            return "the master closed it"
        return f"the master closed it, or nothing came back within {self._link.timeout:g} s of a heartbeat"

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
        header = self._verified.verify(outer, self._trust.key)
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
