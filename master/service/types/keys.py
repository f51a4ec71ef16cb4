"""Keys: list, accept, reject, delete, finger, join tokens (master/service/keys.py)."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from . import Request

DEFAULT_TOKEN_TTL = 3600.0  # a join token's life when none is given


class KeyListRequest(Request, frozen=True):
    """Every key id, by state."""

    command: ClassVar[str] = "key.list"


class KeyAcceptRequest(Request, frozen=True):
    """Accept one key (``id``) or every pending key (``all``)."""

    command: ClassVar[str] = "key.accept"
    id: str = ""
    all: bool = False


class KeyRejectRequest(Request, frozen=True):
    """Reject one key; an accepted agent stops receiving jobs from the next one on."""

    command: ClassVar[str] = "key.reject"
    id: str = ""


class KeyDeleteRequest(Request, frozen=True):
    """Delete one key; an accepted agent stops receiving jobs from the next one on."""

    command: ClassVar[str] = "key.delete"
    id: str = ""


class KeyFingerRequest(Request, frozen=True):
    """Fingerprints: of one agent's key (``id``), or of the master and every agent."""

    command: ClassVar[str] = "key.finger"
    id: str = ""


class TokenRequest(Request, frozen=True):
    """A one-time join token for agent ``id``, valid ``ttl`` seconds (at most MAX_TOKEN_TTL)."""

    command: ClassVar[str] = "key.token"
    id: str
    ttl: float = DEFAULT_TOKEN_TTL


class KeyList(msgspec.Struct, frozen=True):
    """The reply to ``key.list``: agent ids by key state, each list sorted."""

    accepted: list[str]
    pending: list[str]
    rejected: list[str]


class JoinToken(msgspec.Struct, frozen=True):
    """The reply to ``key.token``: the token (shown once; the master keeps only its hash), when it expires
    (seconds since the epoch), and the master key the new agent pins."""

    id: str
    token: str
    expires: float
    master_key: str
