"""The agent: authenticates, keeps its session key, runs jobs, and sends returns and events."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time

import zmq.asyncio

from saltmarsh.pki.keys import Identity, fingerprint, seal_to
from saltmarsh.protocol.crypto import SessionKey
from saltmarsh.protocol.daemon import cancel_and_wait
from saltmarsh.protocol.messages import Ack, Heartbeat, Hello, InventoryCheck, Message, Refused, Welcome
from saltmarsh.protocol.transport import tcp_endpoint
from saltmarsh.protocol.version import VERSION

from .backoff import heartbeat_wait, jittered
from .channel import RequestClient
from .config import AgentConfig
from .errors import AgentError, MasterUnavailable, NotAuthenticated
from .executor import Executor
from .functions import FunctionContext, MasterAddress
from .jobtable import JobTable
from .lanes import JobLanes
from .outbox import EventOutbox, ReturnOutbox
from .regroup import RESTART_STATUS
from .spool import Spool
from .subscriber import JobSubscriber
from .tls import LibvirtTls, admin_uri_for
from .trust import MasterTrust
from .verified import VerifiedFrames
from .virt.events import DomainEventWatcher, start_event_loop
from .virt.host import LibvirtHost
from .virt.images import ImageCache

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT = 10.0
# After a heartbeat got no answer, the hello that follows waits 0 to 2x this long (agent/backoff.py).
HELLO_SPREAD_SECONDS = 0.5
REACH_TRY_SECONDS = 3.0  # one try of reach_master: a master that is there answers a heartbeat in milliseconds
REACH_PAUSE_SECONDS = 0.5
IDLE_POLL_SECONDS = 0.2  # how often an agent due to restart looks whether its jobs have ended
RETURNS_WAIT_SECONDS = 30.0  # how long it then waits for the master to acknowledge their returns


class Agent:
    """One running agent; build it from an AgentConfig and ``await run(stop)``."""

    def __init__(
        self,
        config: AgentConfig,
        zmq_context: zmq.asyncio.Context | None = None,
        job_lanes: JobLanes | None = None,
        verified: VerifiedFrames | None = None,
    ) -> None:
        """Load or make the agent's key; a swarm passes what its members share (context, lanes, verified frames)."""
        self.config = config
        self.identity = Identity.load_or_create(config.key_path)
        pinned = config.master_fingerprint or (fingerprint(config.master_key) if config.master_key else None)
        self.trust = MasterTrust(pinned, config.master_key_path)
        if config.master_key is not None and self.trust.key is None:
            self.trust.remember(config.master_key)
        self.accepted = asyncio.Event()
        self._reauth = asyncio.Event()
        self._beat_now = asyncio.Event()
        self._heartbeat = DEFAULT_HEARTBEAT
        self._owns_zmq = zmq_context is None
        self._zmq = zmq_context or zmq.asyncio.Context()
        self._owns_lanes = job_lanes is None
        self._job_lanes = job_lanes or JobLanes(config.worker_threads)
        self._verified = verified or VerifiedFrames()
        self._restart_asked = asyncio.Event()
        self._restart_reason = ""

    async def run(self, stop: asyncio.Event) -> int | None:
        """Connect, authenticate and serve until ``stop`` is set, or until it must restart: then RESTART_STATUS."""
        cfg = self.config
        log.info("agent %s (key %s) connecting to %s", cfg.agent_id, self.identity.fingerprint, cfg.master)
        self.spool = Spool(cfg.spool_path, max_events=cfg.spool_max_events, max_returns=cfg.spool_max_returns)
        self.events = EventOutbox(asyncio.get_running_loop(), self.spool)
        self.returns = ReturnOutbox(self.spool)
        start_event_loop()  # before the first libvirt connection, or it delivers no events
        self.libvirt = LibvirtHost(cfg.libvirt_uri)
        self.watcher = DomainEventWatcher(self.libvirt, cfg.agent_id, self.events.fire_threadsafe)
        self.watcher.start()
        loop = self._loop = asyncio.get_running_loop()
        def request(message: Message, timeout: float) -> concurrent.futures.Future[Message]:
            return asyncio.run_coroutine_threadsafe(self.send(message, timeout), loop)

        images = ImageCache(cfg.virt.images_dir, cfg.agent_id, request, self.events.fire_threadsafe)
        self.tls = LibvirtTls(cfg.pki_root, cfg.tls_names, request, cfg.tls_renew_fraction,
                              cfg.libvirt_admin_uri or admin_uri_for(cfg.libvirt_uri))
        self.jobs = JobTable(lambda: self._job_lanes.abandoned)
        ctx = FunctionContext(cfg.agent_id, dict(cfg.labels), VERSION, self.events.fire_threadsafe,
                              self.libvirt, cfg.virt, images,
                              MasterAddress(cfg.master, cfg.publish_port, cfg.request_port), self.tls, self.jobs,
                              cfg.setup_socket, self.reach_master, self.restart_when_idle)
        self.executor = Executor(ctx, self.jobs, self._job_lanes, self.returns, self.spool,
                                 owns_lanes=self._owns_lanes)
        self.channel = RequestClient(
            self._zmq, tcp_endpoint(cfg.master, cfg.request_port), self.identity, cfg.agent_id,
            self.trust, cfg.limits, cfg.link, self._on_push,
        )
        self.channel.open()
        self.subscriber = JobSubscriber(
            self._zmq, tcp_endpoint(cfg.master, cfg.publish_port), cfg.agent_id, self.identity, cfg.labels,
            self.trust, cfg.limits, cfg.link, self.executor.submit, self._reauth.set, self._verified,
        )
        tasks = [
            asyncio.create_task(self._auth_loop(), name="auth"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self.subscriber.serve(), name="jobs"),
            asyncio.create_task(self.returns.run(self.send, self.accepted), name="returns"),
            asyncio.create_task(self.events.run(self.send, self.accepted), name="events"),
        ]
        if cfg.libvirt_tls:
            tasks.append(asyncio.create_task(self._tls_loop(), name="libvirt-tls"))
        ended = asyncio.create_task(stop.wait(), name="stop")
        restart = asyncio.create_task(self._restart_once_idle(), name="restart")
        try:
            await asyncio.wait([ended, restart], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([*tasks, ended, restart])
            await self.close()
        if self._restart_reason and not stop.is_set():
            log.info("agent stopped: systemd starts it again (exit status %d)", RESTART_STATUS)
            return RESTART_STATUS
        log.info("agent stopped")
        return None

    def restart_when_idle(self, reason: str) -> None:
        """From any thread: restart (exit RESTART_STATUS, which the unit restarts) once no job is running."""
        self._restart_reason = reason
        self._loop.call_soon_threadsafe(self._restart_asked.set)

    async def _restart_once_idle(self) -> None:
        await self._restart_asked.wait()
        log.info("agent restarts %s, once no job is running", self._restart_reason)
        waited = 0.0
        while not self._idle(waited):
            await asyncio.sleep(IDLE_POLL_SECONDS)
            waited += IDLE_POLL_SECONDS

    def _idle(self, waited: float) -> bool:
        """No job running (one that came in meanwhile is waited for too), and every return acknowledged.

        Abandoned jobs (threads stuck past their deadline) never end: they do not hold the restart up.
        Returns are in the spool and would be sent after the restart; sent first, the caller has them at
        once; a master that is away holds the restart up for at most RETURNS_WAIT_SECONDS.
        """
        if any(job.state != "abandoned" for job in self.jobs.running()):
            return False
        return waited >= RETURNS_WAIT_SECONDS or self.returns.idle()

    async def close(self) -> None:
        """Close sockets, the worker pool and the spool."""
        await self.executor.shutdown()
        self.watcher.stop()
        self.libvirt.close()
        self.subscriber.close()
        await self.channel.close()
        self.spool.close()
        if self._owns_zmq:
            self._zmq.term()

    async def send(self, message: Message, timeout: float | None = None) -> Message:
        """Send a request over the authenticated channel; NotAuthenticated if the master refuses us."""
        reply = await self.channel.request(message, timeout or self.config.request_timeout_seconds)
        if isinstance(reply, Refused):
            self._lost_acceptance(reply.reason)
            raise NotAuthenticated(f"master refused {message.KIND}: {reply.reason}")
        return reply

    def reach_master(self, seconds: float) -> bool:
        """From a worker thread: True once the master answers a heartbeat, False if it did not within ``seconds``.

        Each try that gets no answer resets the request socket, so that the next one connects anew
        (from the host's new address, after a network change).
        """
        loop = self._loop
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            attempt = asyncio.run_coroutine_threadsafe(
                self.send(Heartbeat(key_id=self.subscriber.key_id), min(REACH_TRY_SECONDS, left)), loop)
            try:
                attempt.result(left + 1.0)
                return True
            except (AgentError, concurrent.futures.TimeoutError):
                asyncio.run_coroutine_threadsafe(self.channel.reset(), loop).result(REACH_TRY_SECONDS)
                time.sleep(min(REACH_PAUSE_SECONDS, max(0.0, deadline - time.monotonic())))
        return False

    async def _auth_loop(self) -> None:
        while True:
            await self._authenticate()
            self._reauth.clear()
            await self._reauth.wait()

    async def _authenticate(self) -> None:
        last = ""
        while True:
            knew_master = self.trust.key is not None
            try:
                reply = await self.channel.request(
                    Hello(labels=self.config.labels, version=VERSION, token=self._sealed_token()),
                    self.config.request_timeout_seconds,
                )
            except MasterUnavailable as exc:
                state, reason = "unreachable", str(exc)
                await self.channel.reset()
            else:
                if isinstance(reply, Welcome) and self._apply_welcome(reply):
                    return
                state = reply.state if isinstance(reply, Welcome) else reply.KIND
                reason = getattr(reply, "reason", "")
            if state != last:
                self._log_auth_state(state, reason)
                last = state
            if self.config.join_token and not knew_master and self.trust.key is not None:
                continue  # now the token can be sealed to the master's key: present it at once
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.accepted.wait(), jittered(self.config.auth_retry_seconds))
                if self.subscriber.key_id:
                    return

    def _sealed_token(self) -> bytes:
        if not self.config.join_token or self.trust.key is None:
            return b""
        return seal_to(self.trust.key, self.config.join_token.encode())

    def _log_auth_state(self, state: str, reason: str) -> None:
        if state == "pending":
            log.info("key %s is pending on the master: waiting to be accepted", self.identity.fingerprint)
        elif state == "unreachable":
            log.warning("master %s is not answering (%s); retrying", self.config.master, reason)
        else:
            log.error("master answered %s %s; retrying every %.0f s", state, reason, self.config.auth_retry_seconds)

    def _apply_welcome(self, welcome: Welcome) -> bool:
        if welcome.state != "accepted" or len(welcome.session_key) != 32:
            if self.accepted.is_set():
                self._lost_acceptance(welcome.state)
            return False
        self._heartbeat = welcome.heartbeat_seconds
        if not self.accepted.is_set():
            log.info("accepted by the master; ready for jobs")
            self._beat_now.set()  # tell the master at once that we are up
        self.subscriber.set_session(SessionKey(welcome.session_key))
        self.accepted.set()
        return True

    def _on_push(self, message: Message) -> None:
        if isinstance(message, Welcome):
            self._apply_welcome(message)
        elif isinstance(message, Refused):
            self._lost_acceptance(message.reason)
        elif isinstance(message, InventoryCheck):
            # The master's digest of this host (master/agents/resync.py): the full inventory goes back only
            # if ours differs. Taking it may mean libvirt calls, so not on the loop.
            asyncio.get_running_loop().run_in_executor(None, self.watcher.answer_check, message.digest)

    def _lost_acceptance(self, reason: str) -> None:
        if self.accepted.is_set():
            log.warning("the master no longer accepts this agent's key (%s); submitting it again", reason)
        self.accepted.clear()
        self.subscriber.drop_session()
        self._reauth.set()

    def _check_subscription(self, failures: int, answered_at: float) -> None:
        """Replace the job subscription if its connection may have died unnoticed while the master was away.

        A master that stopped closed it (the subscription saw that, then connected again); a
        path that dropped silently did not, and without ZMTP heartbeats (or before they tell)
        the socket would sit on the dead connection for good, receiving no job ever again.
        """
        if self.subscriber.changed_at < answered_at:
            self.subscriber.reopen(f"the master answered again after {failures} missed heartbeats, but "
                                   "this subscription's connection is the one from before them: it may be "
                                   "dead without either end knowing")

    async def _tls_loop(self) -> None:
        """Keep libvirt's TLS certificates issued, renewed and the CRL fresh (libvirt_tls: true)."""
        loop = asyncio.get_running_loop()
        while True:
            await self.accepted.wait()
            try:
                await loop.run_in_executor(None, self.tls.check)
            except AgentError as exc:
                log.warning("libvirt TLS certificates not updated: %s", exc)
            await asyncio.sleep(self.config.tls_check_seconds)

    async def _heartbeat_loop(self) -> None:
        failures = 0
        answered_at = time.monotonic()  # the last heartbeat the master answered
        while True:
            await self.accepted.wait()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), heartbeat_wait(self._heartbeat))
            self._beat_now.clear()
            try:
                reply = await self.send(Heartbeat(key_id=self.subscriber.key_id))
            except NotAuthenticated:
                continue
            except MasterUnavailable as exc:
                failures += 1
                if failures == 1:
                    log.warning("master stopped answering heartbeats (%s)", exc)
                await self.channel.reset()
                # A master that lost our key answers no heartbeat, but it does answer a hello; the
                # fleet that lost it at the same moment says hello spread over a second, not at once.
                await asyncio.sleep(jittered(HELLO_SPREAD_SECONDS, 1.0))
                self._reauth.set()
                continue
            if failures:
                log.info("master answering again after %d missed heartbeats", failures)
                self._check_subscription(failures, answered_at)
                failures = 0
            answered_at = time.monotonic()
            if isinstance(reply, Ack) and reply.key_id != self.subscriber.key_id:
                self._reauth.set()
