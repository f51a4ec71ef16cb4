"""Whether this process lacks a group its user has been given since it started.

The agent's unit names no ``SupplementaryGroups=libvirt`` (on a bare host the group does not
exist yet, and systemd would refuse to start the unit), so the agent has the groups /etc/group
gave its user when systemd started it. ``host setup`` adds the user to libvirt's group once
libvirt is installed; a process cannot take up a new group by itself without privileges
(initgroups needs CAP_SETGID, which the unit denies), so the agent restarts: systemd starts it
again with the groups its user has now (RestartForceExitStatus=RESTART_STATUS in the unit).
"""

from __future__ import annotations

import grp
import os
import pwd

# The exit status that asks systemd for a restart (EX_TEMPFAIL); the unit lists it.
RESTART_STATUS = 75


def missing_groups() -> list[str]:
    """The names of the groups this process's user has in /etc/group now and this process has not."""
    try:
        user = pwd.getpwuid(os.getuid())
        now = set(os.getgrouplist(user.pw_name, user.pw_gid))
    except (KeyError, OSError):
        return []  # a user /etc/passwd does not name: nothing to compare with
    held = set(os.getgroups()) | {os.getgid()}
    return sorted(_name(gid) for gid in now - held)


def _name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
