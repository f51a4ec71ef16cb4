"""The agent's configuration: ``<config dir>/agent.yaml`` parsed once into AgentConfig."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec

from saltmarsh.pki.errors import InvalidAgentId
from saltmarsh.pki.ids import validate_agent_id
from saltmarsh.pki.keys import decode_public_key
from saltmarsh.protocol.bounds import DEFAULT_CONFIG_DIR as DEFAULT_CONFIG_DIR_NAME
from saltmarsh.protocol.configfile import LogLevel, Port, PositiveSeconds, load_yaml_config, resolve_dir
from saltmarsh.protocol.errors import ConfigError
from saltmarsh.protocol.limits import Limits
from saltmarsh.protocol.transport import LinkHeartbeat

from .states.wire import SETUP_SOCKET
from .virt.profiles import VirtConfig, VirtFile

DEFAULT_CONFIG_DIR = Path(DEFAULT_CONFIG_DIR_NAME)
CONFIG_FILE = "agent.yaml"


class AgentFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The keys ``agent.yaml`` may hold, each with its one default."""

    id: str = ""  # empty means this host's name
    master: str = "localhost"
    publish_port: Port = 4605
    request_port: Port = 4606
    master_fingerprint: str | None = None
    # The master's public key (base64), as `saltmarsh key token` prints it: trusted from the start.
    master_key: str | None = None
    join_token: str | None = None
    labels: dict[str, str] = {}
    libvirt_uri: str = "qemu:///system"
    root_dir: str = "/var/lib/saltmarsh/agent"
    log_level: LogLevel = "info"
    worker_threads: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    auth_retry_seconds: PositiveSeconds = 10.0
    request_timeout_seconds: PositiveSeconds = 10.0
    # ZMTP heartbeats on both connections to the master (protocol/transport.py): a path that drops
    # silently is found within interval + timeout, and the connection made again. 0 turns them off.
    # Their cost on the master at 1,000 agents, measured: about 2 % of a core at 5 s, 6.5 % at 1 s (README).
    link_heartbeat_seconds: Annotated[float, msgspec.Meta(ge=0, le=600)] = 5.0
    link_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=4096)] = Limits.max_frame
    freshness_seconds: PositiveSeconds = Limits.freshness_seconds
    virt: VirtFile = msgspec.field(default_factory=VirtFile)
    libvirt_tls: bool = False  # get libvirt TLS certificates from the master's CA at start, and renew them
    pki_root: str = "/etc/pki"
    tls_names: list[str] = []  # names besides the agent id (host names, IPs) the certificates carry
    tls_renew_fraction: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 2 / 3
    tls_check_seconds: PositiveSeconds = 300.0
    # The on-disk spool (agent/spool.py): what it holds while the master is away, oldest dropped past it.
    spool_max_events: Annotated[int, msgspec.Meta(ge=1)] = 200_000
    spool_max_returns: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    libvirt_admin_uri: str = ""  # libvirtd's admin URI, to reload TLS files; "" = derived from libvirt_uri
    setup_socket: str = SETUP_SOCKET  # the privileged setup helper (host.setup; agent/states/helper.py)


@dataclass(frozen=True)
class AgentConfig:
    """Validated agent settings with paths resolved."""

    config_dir: Path
    agent_id: str
    master: str
    publish_port: int
    request_port: int
    master_fingerprint: str | None
    master_key: bytes | None
    join_token: str | None
    labels: dict[str, str]
    libvirt_uri: str
    root_dir: Path
    log_level: str
    worker_threads: int
    auth_retry_seconds: float
    request_timeout_seconds: float
    link: LinkHeartbeat
    limits: Limits
    virt: VirtConfig
    libvirt_tls: bool
    pki_root: Path
    tls_names: list[str]
    tls_renew_fraction: float
    tls_check_seconds: float
    spool_max_events: int
    spool_max_returns: int
    libvirt_admin_uri: str
    setup_socket: Path

    @property
    def root_dir_mode(self) -> int:
        """The mode root_dir is created with: traversable, not listable, by others.

        The image cache (``virt.images_dir``) lies under root_dir by default, and QEMU, which runs
        as another user (libvirt-qemu), opens base images through it; the rest (pki/ 0700, the
        spool and the lock 0600) is the agent's alone.
        """
        return 0o711

    @property
    def key_path(self) -> Path:
        """The agent's private key."""
        return self.root_dir / "pki" / "agent.key"

    @property
    def master_key_path(self) -> Path:
        """The master's public key as first seen (trust on first use when no fingerprint is pinned)."""
        return self.root_dir / "pki" / "master.pub"

    @property
    def spool_path(self) -> Path:
        """The spool of returns, events and the job journal (agent/spool.py)."""
        return self.root_dir / "spool.sqlite"


def load_agent_config(config_dir: Path) -> AgentConfig:
    """Read ``agent.yaml`` from ``config_dir`` (all defaults if absent); ConfigError if invalid."""
    path = config_dir / CONFIG_FILE
    raw = load_yaml_config(path, AgentFile)
    agent_id = raw.id or socket.gethostname()
    root_dir = resolve_dir(config_dir, raw.root_dir)
    try:
        validate_agent_id(agent_id)
    except InvalidAgentId as exc:
        raise ConfigError(f"{path}: id: {exc}") from exc
    fingerprint = raw.master_fingerprint.lower().strip() if raw.master_fingerprint else None
    try:
        master_key = decode_public_key(raw.master_key) if raw.master_key else None
    except ValueError as exc:
        raise ConfigError(f"{path}: master_key: {exc}") from exc
    return AgentConfig(
        config_dir=config_dir,
        agent_id=agent_id,
        master=raw.master,
        publish_port=raw.publish_port,
        request_port=raw.request_port,
        master_fingerprint=fingerprint,
        master_key=master_key,
        join_token=raw.join_token,
        labels=dict(raw.labels),
        libvirt_uri=raw.libvirt_uri,
        root_dir=root_dir,
        log_level=raw.log_level,
        worker_threads=raw.worker_threads,
        auth_retry_seconds=raw.auth_retry_seconds,
        request_timeout_seconds=raw.request_timeout_seconds,
        link=LinkHeartbeat(raw.link_heartbeat_seconds, raw.link_timeout_seconds),
        limits=Limits(max_frame=raw.max_frame_bytes, freshness_seconds=raw.freshness_seconds),
        virt=VirtConfig.from_file(raw.virt, lambda value: resolve_dir(config_dir, value), root_dir),
        libvirt_tls=raw.libvirt_tls,
        pki_root=resolve_dir(config_dir, raw.pki_root),
        tls_names=[agent_id, *(n for n in raw.tls_names if n != agent_id)],
        tls_renew_fraction=raw.tls_renew_fraction,
        tls_check_seconds=raw.tls_check_seconds,
        spool_max_events=raw.spool_max_events,
        spool_max_returns=raw.spool_max_returns,
        libvirt_admin_uri=raw.libvirt_admin_uri,
        setup_socket=resolve_dir(config_dir, raw.setup_socket),
    )
