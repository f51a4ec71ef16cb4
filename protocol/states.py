"""Hypervisor setup states: the typed requests the master sends (``host.setup``) and the results agents return.

A state names one thing a hypervisor should be (a package installed, a file with this content,
a sysctl, a group member, a service running, a bridge) and is one Struct per kind, told apart on the wire
by its ``kind`` tag. Each state carries a ``name`` unique within its run, and ``watch``: the names
of states before it whose change makes it act again (a service is restarted when its package or
its config file changed, as with Salt's ``watch``). States run in the order given.

Every result says what came of one state: ``unchanged``, ``would_change`` (a dry run), ``changed``,
``failed``, or ``rolled_back`` (a bridge applied, then undone: the agent lost the master), with
the differences found (``changes``: what it was, what it should be) and, for a failure, the reason.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

StateName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}\Z")]
Names = Annotated[list[StateName], msgspec.Meta(max_length=64)]
# A package name, Debian's rules (policy 5.6.1) and RPM's together; no option ("-y") can pass.
Package = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9+._~-]{0,127}\Z")]
AbsolutePath = Annotated[str, msgspec.Meta(pattern=r"^/[^\x00]{0,4095}\Z")]
SysctlKey = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+\Z", max_length=256)]
SysctlValue = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9 ._:/,-]{1,256}\Z")]
Account = Annotated[str, msgspec.Meta(pattern=r"^[a-z_][a-z0-9_.-]{0,31}\$?\Z")]
Unit = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9:_.@\\-]{1,255}\Z")]
OsFamily = Literal["debian", "redhat"]
# A network interface name (IFNAMSIZ: 15 characters), never an option or a path.
Interface = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\Z")]
# An address with its prefix length (10.0.0.2/24, fd00::2/64); the kind parses it again with ipaddress.
Cidr = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Fa-f.:]{2,45}/[0-9]{1,3}\Z")]
IpAddress = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Fa-f.:]{2,45}\Z")]
RollbackSeconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]
DEFAULT_ROLLBACK_SECONDS = 60.0
MAX_FILE_BYTES = 256 * 1024  # a config file, not a payload: images travel as master:// files


class StateBase(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, tag_field="kind"):
    """What every state has: its name in the run, and the earlier states it watches."""

    name: StateName
    watch: Names = []


class FileState(StateBase, frozen=True, kw_only=True, tag="file"):
    """A regular file with exactly this content, mode and owner; written atomically (temp file, rename)."""

    path: AbsolutePath
    content: Annotated[str, msgspec.Meta(max_length=MAX_FILE_BYTES)]
    mode: Annotated[int, msgspec.Meta(ge=0, le=0o7777)] = 0o644
    owner: Account = "root"
    group: Account = "root"
    secret: bool = False  # a key or a password: its content is shown by digest only, never as a diff


class SysctlState(StateBase, frozen=True, kw_only=True, tag="sysctl"):
    """A kernel parameter with this value now, and persisted in /etc/sysctl.d so a reboot keeps it."""

    key: SysctlKey
    value: SysctlValue


class GroupMemberState(StateBase, frozen=True, kw_only=True, tag="group_member"):
    """A user listed as a member of a group (e.g. the agent's user in ``libvirt``)."""

    user: Account
    group: Account


class PkgState(StateBase, frozen=True, kw_only=True, tag="pkg"):
    """Packages installed (or absent), with apt on Debian and dnf on Red Hat.

    ``os_family`` set: the state is for hosts of that family only (a profile lists Debian and
    Red Hat names side by side), and a host of the other family leaves it out of its run.
    """

    packages: Annotated[list[Package], msgspec.Meta(min_length=1, max_length=256)]
    state: Literal["installed", "absent"] = "installed"
    os_family: OsFamily | None = None


class ServiceState(StateBase, frozen=True, kw_only=True, tag="service"):
    """A systemd unit running (or stopped) and enabled (or not); restarted when a watched state changed."""

    unit: Unit
    running: bool = True
    enabled: bool = True


class BridgeState(StateBase, frozen=True, kw_only=True, tag="bridge"):
    """A Linux bridge over ``device`` carrying the device's addresses, persisted in the host's network config.

    ``addresses`` unset: the device's own addresses (and its default gateway) move to the bridge;
    set: the bridge gets exactly these instead. A change that moves the address this host reaches
    the master through is undone by itself unless the agent reaches the master again within
    ``rollback_seconds``.
    """

    bridge: Interface = "br0"
    device: Interface = "eth0"
    addresses: Annotated[list[Cidr], msgspec.Meta(max_length=16)] | None = None
    gateway: IpAddress | None = None
    rollback_seconds: RollbackSeconds = DEFAULT_ROLLBACK_SECONDS


class LibvirtTlsState(StateBase, frozen=True, kw_only=True, tag="libvirt_tls"):
    """libvirtd listening on TLS (``port``) with the certificates the agent got from the master's CA.

    ``source`` is the agent's ``pki_root`` (its own state directory: the sandboxed agent cannot write
    /etc/pki); the files are copied into libvirt's default layout under ``target``.
    """

    source: AbsolutePath = "/var/lib/saltmarsh/agent/libvirt-pki"
    target: AbsolutePath = "/etc/pki"
    socket: Unit = "libvirtd-tls.socket"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 16514


State = FileState | SysctlState | GroupMemberState | PkgState | ServiceState | BridgeState | LibvirtTlsState
StateList = Annotated[list[State], msgspec.Meta(max_length=256)]


class SetupRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Bring this host to ``states``, in order; ``dry_run``: change nothing, report what would change."""

    states: StateList
    dry_run: bool = False


class Change(msgspec.Struct, forbid_unknown_fields=True, frozen=True, array_like=True):
    """One difference: what it is now and what the state wants (both as text, ``-`` for nothing)."""

    old: str
    new: str


# rolled_back: applied, then undone because the agent did not reach the master again in time.
Status = Literal["unchanged", "would_change", "changed", "failed", "rolled_back"]


class StateResult(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What came of one state: its status, the differences found, and why it failed (if it did).

    ``changes`` are the differences found before acting (``would_change``, ``changed``) or still
    left when it failed; ``detail`` is extra text for people (a file's unified diff).
    """

    name: str
    kind: str
    status: Status
    changes: dict[str, Change] = {}
    detail: str = ""
    reason: str = ""
    seconds: float = 0.0


class SetupDone(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The end of a run: the host's OS family, and the error that stopped the run before its states (if any)."""

    os_family: str = ""
    error: str = ""


def host_setup_tag(agent_id: str, state: str) -> str:
    """saltmarsh/host/<agent>/setup/<state>: one state of a run is done (its StateResult is the data)."""
    return f"saltmarsh/host/{agent_id}/setup/{state}"
