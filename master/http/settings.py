"""The HTTP API's settings: ``http:`` in master.yaml, parsed once into HttpSettings (or None: off)."""

from __future__ import annotations

from dataclasses import dataclass
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

    @property
    def url(self) -> str:
        """The API's base URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_http(raw: HttpFile, source: str) -> HttpSettings | None:
    """HttpSettings from ``raw`` (None when off); ConfigError for an address the API may not listen on.

    Plain HTTP carries bearer tokens in the clear, so until the API serves TLS it listens on
    loopback only: anything else is refused at start-up rather than served unprotected.
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
    if not loopback:
        raise ConfigError(f"{source}: http.listen {raw.listen!r} is not a loopback address: the API has no TLS "
                          "yet, and its bearer tokens must not cross a network in the clear")
    return HttpSettings(host, int(port_text), max_body_bytes=raw.max_body_bytes,
                        header_timeout=raw.header_timeout_seconds, event_ring_seconds=raw.event_ring_seconds,
                        event_ring_events=raw.event_ring_events, event_backlog=raw.event_backlog)
