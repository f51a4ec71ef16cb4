"""The cloud controller: host info, list, query, init, operations by name, console, migration (service/vms.py)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from saltmarsh.protocol.bounds import MAX_CONSOLE_LINES
from saltmarsh.protocol.messages import Interval

from . import Request

MAX_DOWNTIME_MS = 3_600_000  # an hour of downtime is an offline migration
MAX_BANDWIDTH_MIB = 1 << 20  # 1 TiB/s: no link is faster; 0 leaves it to libvirt


class HostInfoRequest(Request, frozen=True):
    """Every hypervisor: node facts, free memory and CPUs, VM count, up, maintenance."""

    command: ClassVar[str] = "virt.host_info"


class VmListRequest(Request, frozen=True):
    """Every VM per hypervisor, with its state."""

    command: ClassVar[str] = "virt.list"


class QueryRequest(Request, frozen=True):
    """Per hypervisor and VM: CPU, memory, state, graphics, disks, NICs (one VM if ``name``)."""

    command: ClassVar[str] = "virt.query"
    name: str | None = None


class InitRequest(Request, frozen=True):
    """``virt init``: a VM to place (or put on ``host``) and create; ``dry_run`` explains the placement only.

    The one definition of the request: the CLI builds it, the control socket decodes it, and the
    controller (master/cloud/controller.py) takes it as it is.
    """

    command: ClassVar[str] = "virt.init"
    name: str
    cpus: int
    memory_mib: int
    image: str | None = None
    host: str | None = None
    labels: dict[str, str] = {}
    nic_profile: str = "default"
    disk_profile: str = "default"
    enable_qcow: bool = False
    enable_vnc: bool = False
    seed: bool = False
    master_address: str | None = None  # what a seeded guest's agent is told (master/cloud/seeding.py)
    dry_run: bool = False
    timeout: Interval = 600.0

    @property
    def options(self) -> dict[str, Any]:
        """The agent's ``virt.init`` options this request carries (profiles, qcow, vnc, seed)."""
        return {"nic_profile": self.nic_profile, "disk_profile": self.disk_profile, "enable_qcow": self.enable_qcow,
                "enable_vnc": self.enable_vnc, "seed": self.seed}


class OpRequest(Request, frozen=True):
    """``op`` (start|shutdown|stop|reboot|reset|pause|resume|purge|info|vnc) on VM ``name``."""

    command: ClassVar[str] = "virt.op"
    op: str
    name: str
    timeout: Interval = 120.0


class ConsoleLogRequest(Request, frozen=True):
    """The last ``lines`` lines of VM ``name``'s serial console."""

    command: ClassVar[str] = "virt.console_log"
    name: str
    lines: Annotated[int, msgspec.Meta(ge=1, le=MAX_CONSOLE_LINES)] = 50


class WaitJoinedRequest(Request, frozen=True):
    """Wait for the agent inside seeded VM ``name`` to join."""

    command: ClassVar[str] = "virt.wait_joined"
    name: str
    timeout: Interval = 300.0


class MigrateRequest(Request, frozen=True):
    """``virt migrate``: VM ``name`` to hypervisor ``target`` over libvirt TLS."""

    command: ClassVar[str] = "virt.migrate"
    name: str
    target: str
    offline: bool = False
    copy_storage: Literal["", "all", "inc"] = ""
    max_downtime_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_DOWNTIME_MS)] = 0
    bandwidth_mib: Annotated[int, msgspec.Meta(ge=0, le=MAX_BANDWIDTH_MIB)] = 0
    postcopy: bool = False
    dry_run: bool = False
    timeout: Interval = 600.0


class MigrateAbortRequest(Request, frozen=True):
    """Abort the running migration of VM ``name``."""

    command: ClassVar[str] = "virt.migrate_abort"
    name: str = ""
