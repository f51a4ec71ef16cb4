"""The master's configuration: ``<config dir>/master.yaml`` parsed once into MasterConfig."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec

from saltmarsh.pki.ca_settings import CaSettings
from saltmarsh.protocol.bounds import DEFAULT_CONFIG_DIR as DEFAULT_CONFIG_DIR_NAME
from saltmarsh.protocol.configfile import LogLevel, Port, PositiveSeconds, load_yaml_config, resolve_dir
from saltmarsh.protocol.limits import Limits

from .control.endpoints import CONTROL_SOCKET, DEFAULT_ROOT_DIR, STREAM_SOCKET, control_dir
from .hosts.profile import HostFile, HostProfiles
from .http.settings import HttpFile, HttpSettings, parse_http

DEFAULT_CONFIG_DIR = Path(DEFAULT_CONFIG_DIR_NAME)
CONFIG_FILE = "master.yaml"


class PkiFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The ``pki:`` section: the CA for libvirt TLS and which names each agent may certify."""

    ca_common_name: str = CaSettings.common_name
    ca_days: Annotated[int, msgspec.Meta(ge=1)] = CaSettings.ca_days
    cert_days: Annotated[int, msgspec.Meta(ge=1)] = CaSettings.cert_days
    default_names: list[str] = []
    allowed_names: dict[str, list[str]] = {}


class VirtMasterFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The ``virt:`` section: how hypervisors reach each other for migration."""

    tunnel: bool = False  # migrate through the libvirt TLS connection itself (no second data port)
    # The libvirtd URI of each hypervisor; default qemu+tls://<agent id>/system.
    migration_uris: dict[str, str] = {}
    # Allow migration of disks whose cache mode libvirt cannot prove safe (shared file systems).
    migration_unsafe: bool = False


class SeedFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The ``seed:`` section: what a seeded VM's own agent is told."""

    # The address the guest's agent reaches the master at; empty: the master's interface, if concrete.
    master_address: Annotated[str, msgspec.Meta(max_length=253)] = ""


class MasterFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The keys ``master.yaml`` may hold, each with its one default."""

    interface: str = "0.0.0.0"
    publish_port: Port = 4605
    request_port: Port = 4606
    root_dir: str = DEFAULT_ROOT_DIR
    auto_accept: bool = False
    keep_jobs_hours: PositiveSeconds = 24.0
    log_level: LogLevel = "info"
    heartbeat_seconds: PositiveSeconds = 10.0
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=4096)] = Limits.max_frame
    freshness_seconds: PositiveSeconds = Limits.freshness_seconds
    # Keys that may wait as pending at once: key submission is open to anyone, so a flood of
    # fresh ids must stop somewhere; ten times the agents one master is built to serve.
    max_pending_keys: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    max_replay_nonces: Annotated[int, msgspec.Meta(ge=16)] = Limits.max_nonces
    file_roots: list[str] = []
    pki: PkiFile = msgspec.field(default_factory=PkiFile)
    virt: VirtMasterFile = msgspec.field(default_factory=VirtMasterFile)
    seed: SeedFile = msgspec.field(default_factory=SeedFile)
    host: HostFile = msgspec.field(default_factory=HostFile)
    http: HttpFile = msgspec.field(default_factory=HttpFile)


@dataclass(frozen=True)
class MasterConfig:
    """Validated master settings with paths resolved; passed to every part that needs one."""

    config_dir: Path
    interface: str
    publish_port: int
    request_port: int
    root_dir: Path
    auto_accept: bool
    keep_jobs_hours: float
    log_level: str
    heartbeat_seconds: float
    max_pending_keys: int
    limits: Limits
    file_roots: list[Path]
    ca: CaSettings
    cert_default_names: list[str]
    cert_allowed_names: dict[str, list[str]]
    virt: VirtMasterFile
    seed: SeedFile
    host: HostProfiles
    http: HttpSettings | None = None  # None: the HTTP API is off

    @property
    def root_dir_mode(self) -> int:
        """The mode root_dir is created with: keys, the session key and the job cache are the master's alone."""
        return 0o700

    @property
    def control_dir(self) -> Path:
        """Directory of the control socket (mode 0700: its permissions are the access control)."""
        return control_dir(self.root_dir)

    @property
    def control_socket(self) -> Path:
        """Path of the control socket."""
        return self.control_dir / CONTROL_SOCKET

    @property
    def stream_socket(self) -> Path:
        """Path of the control stream socket (length-prefixed JSON; master/control/stream.py)."""
        return self.control_dir / STREAM_SOCKET

    @property
    def key_path(self) -> Path:
        """The master's private key."""
        return self.root_dir / "pki" / "master.key"

    @property
    def agent_keys_dir(self) -> Path:
        """The agent key store."""
        return self.root_dir / "pki" / "agents"

    @property
    def session_key_path(self) -> Path:
        """The current publish session key (kept so a restart does not force re-authentication)."""
        return self.root_dir / "pki" / "session.key"

    @property
    def ca_dir(self) -> Path:
        """The libvirt CA (its key never leaves this directory)."""
        return self.root_dir / "pki" / "ca"

    @property
    def job_cache_path(self) -> Path:
        """The SQLite job cache."""
        return self.root_dir / "jobs.sqlite"


def load_master_config(config_dir: Path) -> MasterConfig:
    """Read ``master.yaml`` from ``config_dir`` (all defaults if absent); ConfigError if invalid."""
    path = config_dir / CONFIG_FILE
    raw = load_yaml_config(path, MasterFile)
    return MasterConfig(
        config_dir=config_dir,
        interface=raw.interface,
        publish_port=raw.publish_port,
        request_port=raw.request_port,
        root_dir=resolve_dir(config_dir, raw.root_dir),
        auto_accept=raw.auto_accept,
        keep_jobs_hours=raw.keep_jobs_hours,
        log_level=raw.log_level,
        heartbeat_seconds=raw.heartbeat_seconds,
        max_pending_keys=raw.max_pending_keys,
        limits=Limits(max_frame=raw.max_frame_bytes, freshness_seconds=raw.freshness_seconds,
                      max_nonces=raw.max_replay_nonces),
        file_roots=[resolve_dir(config_dir, root) for root in raw.file_roots],
        ca=CaSettings(common_name=raw.pki.ca_common_name, ca_days=raw.pki.ca_days, cert_days=raw.pki.cert_days),
        cert_default_names=list(raw.pki.default_names),
        cert_allowed_names={k: list(v) for k, v in raw.pki.allowed_names.items()},
        virt=raw.virt,
        seed=raw.seed,
        host=HostProfiles.from_file(raw.host, str(path)),
        http=parse_http(raw.http, str(path), config_dir),
    )
