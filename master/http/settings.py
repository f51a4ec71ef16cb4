"""The HTTP API's settings: ``http:`` in master.yaml, parsed once into HttpSettings (or None: off)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec

from saltmarsh.protocol.errors import ConfigError

# A request body larger than this is refused before it is read whole (tornado's max_body_size).
MAX_BODY_BYTES = 1 << 20
# A client that has not sent its whole request head within this is cut off (slowloris).
HEADER_TIMEOUT_SECONDS = 10.0
# A body that does not arrive within this is cut off too.
BODY_TIMEOUT_SECONDS = 30.0
# /v1/events: how long and how many past events a reconnecting client can ask for (``since``), and how
# many events may wait for one subscriber before it is cut off as too slow.
EVENT_RING_SECONDS = 300.0
EVENT_RING_EVENTS = 200_000
EVENT_BACKLOG = 10_000


class HttpFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``http:`` in master.yaml. ``listen`` empty (the default) keeps the API off."""

    listen: Annotated[str, msgspec.Meta(max_length=300)] = ""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 << 20)] = MAX_BODY_BYTES
    header_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = HEADER_TIMEOUT_SECONDS
    event_ring_seconds: Annotated[float, msgspec.Meta(gt=0, le=86400)] = EVENT_RING_SECONDS
    event_ring_events: Annotated[int, msgspec.Meta(ge=100, le=10_000_000)] = EVENT_RING_EVENTS
    event_backlog: Annotated[int, msgspec.Meta(ge=10, le=1_000_000)] = EVENT_BACKLOG
    # TLS: with tls true and no cert/key, the master issues the API a certificate from its own CA at
    # start (names: tls_names, else this host's name and the listen address); cert/key: the operator's.
    tls: bool = False
    tls_cert: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    tls_key: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    tls_names: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=253)]],
                         msgspec.Meta(max_length=64)] = []


@dataclass(frozen=True)
class TlsFiles:
    """The API's certificate: the operator's files, or (both None) one the master issues from its CA."""

    cert: Path | None
    key: Path | None
    names: tuple[str, ...]


@dataclass(frozen=True)
class HttpSettings:
    """Where the API listens, and its bounds."""

    host: str
    port: int
    max_body_bytes: int = MAX_BODY_BYTES
    header_timeout: float = HEADER_TIMEOUT_SECONDS
    body_timeout: float = BODY_TIMEOUT_SECONDS
    event_ring_seconds: float = EVENT_RING_SECONDS
    event_ring_events: int = EVENT_RING_EVENTS
    event_backlog: int = EVENT_BACKLOG
    tls: TlsFiles | None = None  # None: plain HTTP (loopback only)

    @property
    def url(self) -> str:
        """The API's base URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


def parse_http(raw: HttpFile, source: str, config_dir: Path) -> HttpSettings | None:
    """HttpSettings from ``raw`` (None when off); ConfigError for an address the API may not listen on.

    Plain HTTP carries bearer tokens in the clear, so without TLS the API listens on loopback only:
    anything else is refused at start-up rather than served unprotected.
    """
    if not raw.listen:
        return None
    import ipaddress  # only when the API is on: the CLI reads this file on every call

    host, sep, port_text = raw.listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{source}: http.listen must be HOST:PORT (got {raw.listen!r})")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not raw.tls:
        raise ConfigError(f"{source}: http.listen {raw.listen!r} is not a loopback address and http.tls is off: "
                          "bearer tokens must not cross a network in the clear")
    if bool(raw.tls_cert) != bool(raw.tls_key):
        raise ConfigError(f"{source}: http.tls_cert and http.tls_key go together")
    tls = None
    if raw.tls:
        tls = TlsFiles(cert=config_dir / raw.tls_cert if raw.tls_cert else None,
                       key=config_dir / raw.tls_key if raw.tls_key else None,
                       names=tuple(raw.tls_names))
    return HttpSettings(tls=tls, host=host, port=int(port_text), max_body_bytes=raw.max_body_bytes,
                        header_timeout=raw.header_timeout_seconds, event_ring_seconds=raw.event_ring_seconds,
                        event_ring_events=raw.event_ring_events, event_backlog=raw.event_backlog)
