"""Host profiles (``host:`` in master.yaml): what ``saltmarsh host setup`` brings a hypervisor to.

A profile lists packages per OS family, kernel parameters, group members, services, and any
extra states (protocol/states.py, written as in YAML: ``{kind: file, name: ..., path: ...}``).
It is compiled once, when the config is read, into the ordered states a host is sent:

    pkg-debian, pkg-redhat          the packages (each host keeps the one of its own family)
    group-<group>-<user>            group members
    sysctl-<key>                    kernel parameters, live and in /etc/sysctl.d
    bridge-<bridge>                 the bridge (br0 over eth0 unless the profile says otherwise;
                                    ``bridge: null`` for none), with its rollback timer
    libvirt-tls                     with ``libvirt_tls: true``: libvirtd on TLS 16514
    <extra states>                  in the order written
    service-<unit>                  running and enabled, each watching the packages and the
                                    extra states: restarted when one of them changed

Which profile a host gets: ``--profile P`` if given, else the first ``by_label`` rule whose
labels the host carries, else ``default``. The built-in ``default`` profile is the seed's
list (a hypervisor with libvirt, QEMU/KVM and the image tools); a profile written in
master.yaml takes every setting it does not name from the same defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from saltmarsh.protocol.errors import ConfigError
from saltmarsh.protocol.states import (
    DEFAULT_ROLLBACK_SECONDS,
    Account,
    BridgeState,
    Cidr,
    GroupMemberState,
    Interface,
    IpAddress,
    LibvirtTlsState,
    OsFamily,
    Package,
    PkgState,
    RollbackSeconds,
    ServiceState,
    State,
    StateList,
    SysctlKey,
    SysctlState,
    SysctlValue,
    Unit,
)

DEFAULT_PROFILE = "default"


class PackagesFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Package names per OS family.

    Debian names real packages only: bookworm has no ``qemu-kvm`` package (qemu-system-x86
    provides it), and dpkg would report a virtual name absent on every run, a false change.
    qemu-utils holds qemu-img and qemu-nbd; on Red Hat, qemu-img holds both.
    """

    debian: list[Package] = msgspec.field(
        default_factory=lambda: ["libvirt-daemon-system", "libvirt-clients", "qemu-system-x86", "qemu-utils"])
    redhat: list[Package] = msgspec.field(default_factory=lambda: ["libvirt", "qemu-kvm", "qemu-img"])


class BridgeFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The bridge guests' NICs join (virt's default NIC profile bridges to ``br0``).

    ``addresses`` unset: the device's own addresses move to the bridge. ``rollback_seconds``:
    how long the agent has to reach the master again after a change that moved its route,
    before the host puts its old network config back.
    """

    name: Interface = "br0"
    device: Interface = "eth0"
    addresses: list[Cidr] | None = None
    gateway: IpAddress | None = None
    rollback_seconds: RollbackSeconds = DEFAULT_ROLLBACK_SECONDS


class ProfileFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One profile; every setting it does not name is the seed's."""

    packages: PackagesFile = msgspec.field(default_factory=PackagesFile)
    # The agent's own user in libvirt's group: the socket qemu:///system is reached through.
    groups: dict[Account, list[Account]] = msgspec.field(default_factory=lambda: {"libvirt": ["saltmarsh"]})
    # Guests' traffic is routed through the host (NAT networks, bridges).
    sysctls: dict[SysctlKey, SysctlValue] = msgspec.field(default_factory=lambda: {"net.ipv4.ip_forward": "1"})
    bridge: BridgeFile | None = msgspec.field(default_factory=BridgeFile)
    # libvirtd on TLS 16514 with the agent's certificates from the master's CA (agent.yaml libvirt_tls: true).
    libvirt_tls: bool = False
    states: StateList = []
    services: list[Unit] = msgspec.field(default_factory=lambda: ["libvirtd.service"])


class LabelRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Hosts carrying all of ``labels`` get ``profile``."""

    labels: dict[str, str]
    profile: str


class HostFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The ``host:`` section: the profiles by name, and which hosts get which."""

    profiles: dict[str, ProfileFile] = {}
    by_label: list[LabelRule] = []


@dataclass(frozen=True)
class HostProfiles:
    """The compiled profiles: each a list of states, in the order a host runs them."""

    profiles: dict[str, list[State]]
    rules: list[LabelRule]

    @classmethod
    def from_file(cls, raw: HostFile, where: str) -> HostProfiles:
        """Compile ``raw``; ConfigError if a rule names no profile or a profile's states cannot run in order."""
        profiles = {DEFAULT_PROFILE: compile_profile(ProfileFile())}
        profiles.update({name: compile_profile(profile) for name, profile in raw.profiles.items()})
        for rule in raw.by_label:
            if rule.profile not in profiles:
                raise ConfigError(f"{where}: host.by_label: no profile {rule.profile!r} "
                                  f"(known: {', '.join(sorted(profiles))})")
        for name, states in profiles.items():
            names = [state.name for state in states]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ConfigError(f"{where}: host.profiles.{name}: two states named {', '.join(twice)}")
        return cls(profiles, list(raw.by_label))

    def profile_for(self, labels: dict[str, str]) -> str:
        """The profile of a host with ``labels``: the first rule it matches, else the default."""
        for rule in self.rules:
            if all(labels.get(key) == value for key, value in rule.labels.items()):
                return rule.profile
        return DEFAULT_PROFILE


def compile_profile(profile: ProfileFile) -> list[State]:
    """The states of ``profile``, in order (see the module's docstring)."""
    families: list[tuple[OsFamily, list[str]]] = [("debian", profile.packages.debian),
                                                  ("redhat", profile.packages.redhat)]
    packages: list[State] = [PkgState(name=f"pkg-{family}", packages=list(names), os_family=family)
                             for family, names in families if names]
    groups: list[State] = [GroupMemberState(name=f"group-{group}-{user}", user=user, group=group)
                           for group, users in profile.groups.items() for user in users]
    sysctls: list[State] = [SysctlState(name=f"sysctl-{key}", key=key, value=value)
                            for key, value in profile.sysctls.items()]
    bridge: list[State] = []
    if profile.bridge is not None:
        spec = profile.bridge
        bridge = [BridgeState(name=f"bridge-{spec.name}", bridge=spec.name, device=spec.device,
                              addresses=spec.addresses, gateway=spec.gateway, rollback_seconds=spec.rollback_seconds)]
    tls: list[State] = [LibvirtTlsState(name="libvirt-tls")] if profile.libvirt_tls else []
    watched = [state.name for state in (*packages, *profile.states) if not isinstance(state, ServiceState)]
    services: list[State] = [ServiceState(name=f"service-{unit}", unit=unit, watch=watched)
                             for unit in profile.services]
    return [*packages, *groups, *sysctls, *bridge, *tls, *profile.states, *services]
