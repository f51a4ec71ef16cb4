"""Events and the master itself: subscribe, ping (master/service/events.py)."""

from __future__ import annotations

from typing import ClassVar

from . import Request


class SubscribeRequest(Request, frozen=True):
    """Events whose tag matches ``pattern``: a prefix, or a glob over the whole tag; empty for every event."""

    command: ClassVar[str] = "events.subscribe"
    pattern: str = ""


class PingRequest(Request, frozen=True):
    """Is the master up? Its fingerprint and counters."""

    command: ClassVar[str] = "master.ping"
