"""The fleet view: agent.list, agent.show (master/service/agents.py)."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from saltmarsh.protocol.messages import Interval, Target

from . import QUERY_TIMEOUT, Request

AgentStatus = Literal["up", "down", "never connected"]


class AgentListRequest(Request, frozen=True):
    """Which agents to show (every known one by default) and how long to wait for their job counts."""

    command: ClassVar[str] = "agent.list"
    target: Target | None = None
    timeout: Interval = QUERY_TIMEOUT


class AgentShowRequest(Request, frozen=True):
    """One agent, by id."""

    command: ClassVar[str] = "agent.show"
    id: str
    timeout: Interval = QUERY_TIMEOUT


class AgentView(msgspec.Struct, frozen=True, kw_only=True):
    """One agent as the master knows it (``agent.list`` and ``agent.show``); times are seconds since the epoch.

    ``since`` is when it came up (``state`` "up") or went down ("down"); None if it never connected
    to this master, or (up) if it came up before a master restart. ``address`` is where its last
    hello came from since the master started. ``running`` counts the jobs it holds (queued or
    running) by its own word, ``abandoned`` the stuck threads it gave up on; both None when it was
    not asked (down, key not accepted) or did not answer, with why in ``running_note``. ``libvirt``
    is None for an agent that is no hypervisor the inventory knows (a guest, or no snapshot yet).
    """

    id: str
    key: str
    state: AgentStatus
    since: float | None
    last_seen: float | None
    first_seen: float | None
    labels: dict[str, str]
    version: str
    address: str
    role: Literal["hypervisor", "guest"]
    fingerprint: str
    running: int | None = None
    abandoned: int | None = None
    running_note: str = ""
    libvirt: bool | None = None
    libvirt_error: str = ""
    maintenance: bool = False
