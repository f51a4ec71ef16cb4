"""The master: wires key store, channels, job router, event bus and control socket together."""

from __future__ import annotations

import asyncio
import logging

import zmq.asyncio

from saltmarsh.pki.ca import CertificateAuthority
from saltmarsh.pki.keys import Identity, encode_public_key
from saltmarsh.pki.keystore import KeyStore
from saltmarsh.protocol.daemon import cancel_and_wait
from saltmarsh.protocol.messages import (
    CertRequest,
    CrlRequest,
    Events,
    FileRead,
    FileStat,
    Heartbeat,
    Hello,
    Message,
    Returns,
    Welcome,
)

from .agents.join_tokens import TokenStore
from .agents.keys import KeyManager
from .agents.presence import Presence
from .agents.relay import AgentEventRelay
from .agents.resync import InventoryChecks
from .certs.service import CertificateService
from .cloud.controller import Controller, SeedAddresses
from .cloud.fileserver import SERVED_RECORDS, FileRequests, FileServer
from .cloud.inventory import Inventory
from .cloud.migration import Migrations
from .cloud.placement import Placement
from .config import MasterConfig
from .control.server import ControlServer
from .control.stream import StreamServer
from .events.bus import EventBus
from .hosts.setup import HostSetup
from .http.tokens import ApiTokens
from .jobs.batches import Batches
from .jobs.router import JobRouter
from .store.jobcache import JobCache
from .wire.publisher import Publisher, SessionKeys
from .wire.request_channel import Request, RequestChannel

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 1.0


class Master:
    """One running master; build it from a MasterConfig and ``await run(stop)``."""

    def __init__(self, config: MasterConfig) -> None:
        self.config = config
        config.root_dir.mkdir(parents=True, exist_ok=True)
        config.root_dir.chmod(0o700)  # keys, the session key and the job cache live here
        self.identity = Identity.load_or_create(config.key_path)
        self.bus = EventBus()
        self.cache = JobCache(config.job_cache_path)
        self.presence = Presence(self.cache, self.bus, config.heartbeat_seconds)
        self.sessions = SessionKeys(config.session_key_path)
        self._zmq = zmq.asyncio.Context()
        store = KeyStore(config.agent_keys_dir)
        self.channel = RequestChannel(self._zmq, self.identity, store.accepted_key, config.limits)
        self.publisher = Publisher(self._zmq, self.identity, self.sessions, config.limits, self.channel.peer_cipher)
        self.keys = KeyManager(
            store, self.bus, self.sessions, self.presence, self.channel, self.identity, TokenStore(self.cache),
            auto_accept=config.auto_accept, heartbeat_seconds=config.heartbeat_seconds,
            max_pending_keys=config.max_pending_keys,
        )
        self.api_tokens = ApiTokens(self.cache)
        self.jobs = JobRouter(self.cache, self.bus, self.publisher, self.presence, self.keys)
        self.batches = Batches(self.jobs, self.bus, self.presence)
        self.relay = AgentEventRelay(self.bus, self.presence, self.cache)
        self.inventory = Inventory(self.cache, self.keys.is_guest)
        placement = Placement(self.inventory, self.presence.is_up,
                              self.presence.labels)
        self.controller = Controller(self.inventory, placement, self.jobs, self.presence, self.keys,
                                     encode_public_key(self.identity.public_key),
                                     SeedAddresses(config.seed.master_address, config.interface), self.bus)
        self.host_setup = HostSetup(self.jobs, self.presence, config.host)
        self.migrations = Migrations(self.controller, self.inventory, self.presence, self.bus, config.virt)
        self.bus.subscribe("saltmarsh/virt/", self.inventory.on_event)
        self.resync = InventoryChecks(self.inventory, self.presence, self.keys, self.channel)
        self.bus.subscribe("saltmarsh/agent/*/up", self.resync.on_agent_up)
        self.bus.subscribe("saltmarsh/key/*/deleted", lambda e: self.inventory.forget(e.data["id"]))
        self.channel.on(Hello.KIND, self._on_hello)
        self.channel.on(Heartbeat.KIND, self.keys.on_heartbeat)
        self.channel.on(Returns.KIND, self.jobs.on_returns)
        self.channel.on(Events.KIND, self.relay.on_events)
        files = FileRequests(FileServer(config.file_roots, records=config.root_dir / SERVED_RECORDS))
        self.channel.on(FileStat.KIND, files.on_stat)
        self.channel.on(FileRead.KIND, files.on_read)
        self.certificates = CertificateService(CertificateAuthority(config.ca_dir, config.ca), self.bus,
                                               config.cert_allowed_names, config.cert_default_names)
        self.channel.on(CertRequest.KIND, self.certificates.on_cert_request)
        self.channel.on(CrlRequest.KIND, self.certificates.on_crl_request)
        for state in ("rejected", "deleted"):
            self.bus.subscribe(f"saltmarsh/key/*/{state}", self.certificates.on_key_revoked)
        self.control = ControlServer(self._zmq, self)
        self.stream = StreamServer(self)  # the same service for stdlib-only clients (the CLI's fast path)

    async def run(self, stop: asyncio.Event) -> None:
        """Bind, serve until ``stop`` is set, then close everything."""
        cfg = self.config
        self.publisher.bind(cfg.interface, cfg.publish_port)
        self.channel.bind(cfg.interface, cfg.request_port)
        self.control.bind()
        await self.stream.start()
        api = None
        if cfg.http is not None:
            from .http.server import start_api  # tornado is loaded only when the API is on

            api = await start_api(self, cfg.http)
        log.info(
            "master %s listening on %s (publish %d, request %d), control socket %s",
            self.identity.fingerprint, cfg.interface, cfg.publish_port, cfg.request_port, cfg.control_socket,
        )
        tasks = [
            asyncio.create_task(self.channel.serve(), name="request-channel"),
            asyncio.create_task(self.control.serve(), name="control"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
            asyncio.create_task(self.resync.serve(), name="inventory-checks"),
        ]
        try:
            await stop.wait()
        finally:
            if api is not None:
                await api.stop()
            await self.batches.close()
            await cancel_and_wait(tasks)
            self.close()
        log.info("master stopped")

    async def _on_hello(self, req: Request) -> Message:
        reply = await self.keys.on_hello(req)
        if isinstance(reply, Welcome) and reply.state == "accepted":
            # A hello from an accepted agent is one that started, or lost the master: what it holds
            # may differ even if it never counted as down here (a quick restart).
            self.resync.queue(req.agent_id)
        return reply

    async def _housekeeping(self) -> None:
        purge_every = max(1, int(60 / HOUSEKEEPING_SECONDS))
        ticks = 0
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            self.presence.sweep()
            ticks += 1
            if ticks % purge_every == 0:
                purged = self.cache.purge_older_than(self.config.keep_jobs_hours)
                if purged:
                    log.info("purged %d jobs older than %s h", purged, self.config.keep_jobs_hours)

    def close(self) -> None:
        """Close sockets and the job cache."""
        self.stream.close()
        self.control.close()
        self.channel.close()
        self.publisher.close()
        self.presence.sweep()
        self.cache.close()
        self._zmq.term()
