"""Hosts: maintenance, role, setup (master/service/hosts.py)."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from saltmarsh.protocol.messages import Interval, Target

from . import Request


class MaintenanceRequest(Request, frozen=True):
    """Maintenance on or off for hypervisor ``host`` (placement skips one in maintenance)."""

    command: ClassVar[str] = "host.maintenance"
    host: str
    state: Literal["on", "off"]


class RoleRequest(Request, frozen=True):
    """Whether accepted agent ``id`` is a hypervisor or a guest (one that joined by token)."""

    command: ClassVar[str] = "host.role"
    id: str
    role: Literal["hypervisor", "guest"]


class SetupRequest(Request, frozen=True):
    """``host setup``: bring the targeted hosts to their profiles (``dry_run``: only say what would change)."""

    command: ClassVar[str] = "host.setup"
    target: Target
    profile: str | None = None
    dry_run: bool = False
    timeout: Interval = 1800.0  # packages on a fresh host over a slow mirror


class MaintenanceState(msgspec.Struct, frozen=True):
    """The reply to ``host.maintenance``: the hypervisor and whether it is in maintenance now."""

    host: str
    maintenance: bool


class RoleState(msgspec.Struct, frozen=True):
    """The reply to ``host.role``: the agent and its role now."""

    id: str
    role: Literal["hypervisor", "guest"]
