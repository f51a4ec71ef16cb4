"""``group_member``: a user listed in a group (the agent's user in ``libvirt``, the libvirt user in ``kvm``)."""

from __future__ import annotations

import grp
import pwd

from saltmarsh.protocol.states import Change, GroupMemberState

from ..errors import StateError
from . import Facets, Kind


class GroupMember(Kind[GroupMemberState]):
    """Reads /etc/group (through NSS) and adds the member with gpasswd."""

    request = GroupMemberState

    def current(self, state: GroupMemberState) -> Facets:
        """``yes`` if the user is a member; ``no``, or why not yet (no such group or user: a package may make it)."""
        try:
            members = grp.getgrnam(state.group).gr_mem
        except KeyError:
            return {"member": f"no group {state.group}"}
        try:
            pwd.getpwnam(state.user)
        except KeyError:
            return {"member": f"no user {state.user}"}
        return {"member": "yes" if state.user in members else "no"}

    def desired(self, state: GroupMemberState) -> Facets:
        """The user is a member."""
        return {"member": "yes"}

    def detail(self, state: GroupMemberState, changes: dict[str, Change]) -> str:
        """Why a running process of the user (the agent) does not have the group yet."""
        return f"{state.user}'s processes get group {state.group} when they next start"

    def apply(self, state: GroupMemberState, changes: dict[str, Change]) -> None:
        """``gpasswd -a USER GROUP`` (shadow's own tool: it locks /etc/group and /etc/gshadow)."""
        now = changes["member"].old
        if now.startswith("no group") or now.startswith("no user"):
            raise StateError(f"cannot add {state.user} to {state.group}: {now}")
        self.system.run(["gpasswd", "-a", state.user, state.group])
