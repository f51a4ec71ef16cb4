"""The systemd units parse (systemd-analyze verify) and carry the hardening they promise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).parent.parent / "systemd").glob("*.service"))
# The one unit that runs as root: it installs packages and writes /etc (README, "Privileges of host setup").
HELPER = "saltmarsh-setup-helper.service"
DAEMONS = [unit for unit in UNITS if unit.name != HELPER]
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "CapabilityBoundingSet=",
             "RestrictAddressFamilies=", "SystemCallFilter=@system-service", "UMask=0077")
# What the helper keeps of that (its job forbids the rest), and what it has instead.
HELPER_HARDENING = ("PrivateTmp=yes", "ProtectHome=yes", "ProtectKernelModules=yes", "CapabilityBoundingSet=CAP_",
                    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "SystemCallFilter=@system-service",
                    "SystemCallFilter=~@reboot @swap @module @raw-io", "RuntimeDirectoryMode=0750", "UMask=0022")
# Capabilities a package installer never needs: none of them may be in the helper's bounding set.
HELPER_NEVER = ("CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_BOOT", "CAP_SYS_TIME", "CAP_SYS_PTRACE", "CAP_BPF",
                "CAP_PERFMON", "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_SYSLOG", "CAP_NET_RAW")


@pytest.mark.parametrize("unit", DAEMONS, ids=lambda p: p.name)
def test_unit_is_hardened_and_runs_in_foreground(unit: Path) -> None:
    text = unit.read_text()
    for setting in HARDENING:
        assert setting in text, f"{unit.name} lacks {setting}"
    assert "User=saltmarsh" in text and "User=root" not in text
    assert "-c /etc/saltmarsh" in text and "KillSignal=SIGTERM" in text


@pytest.mark.timeout(30)
def test_only_the_setup_helper_is_root_and_it_is_hardened_as_far_as_its_job_allows() -> None:
    assert [unit.name for unit in UNITS if "User=root" in unit.read_text()] == [HELPER]
    text = (Path(__file__).parent.parent / "systemd" / HELPER).read_text()
    for setting in HELPER_HARDENING:
        assert setting in text, f"{HELPER} lacks {setting}"
    bounding = next(line for line in text.splitlines() if line.startswith("CapabilityBoundingSet="))
    assert not [cap for cap in HELPER_NEVER if cap in bounding.split("=", 1)[1].split()]
    assert "-c /etc/saltmarsh" in text and "KillSignal=SIGTERM" in text and "Before=saltmarsh-agent.service" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_verify(tmp_path: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, UNITS)],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "is not executable" not in line]  # the venv is not installed at /opt here
    assert problems == []


# Syscalls the daemons make that a filter must leave them: libzmq's I/O threads set their scheduling
# parameters at start (found when the agent's unit first ran for real, in a guest: SIGSYS on connect).
NEEDED_SYSCALLS = ("sched_setscheduler", "sched_setparam", "epoll_wait", "socket", "connect", "futex")
# libvirt's library sets its memory policy as it loads (found when host setup first installed libvirt
# under the shipped unit: SIGSYS, syscall 238, at every start of the agent from then on).
NEEDED_BY = {"saltmarsh-agent.service": ("set_mempolicy",)}


def _expand(names: list[str], groups: dict[str, set[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        out |= _expand(sorted(groups[name]), groups) if name.startswith("@") else {name}
    return out


def _syscall_groups() -> dict[str, set[str]]:
    """systemd's own syscall groups (systemd-analyze syscall-filter), by name."""
    text = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    groups: dict[str, set[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("@"):
            current = line.split()[0]
            groups[current] = set()
        elif current and line.startswith("    ") and not line.strip().startswith("#"):
            groups[current].add(line.split()[0])
    return groups


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_the_syscall_filter_leaves_what_the_daemons_need(unit: Path) -> None:
    # systemd merges SystemCallFilter= lines in order: the first sets allow-list mode, each later
    # line adds (plain) or removes (~) its syscalls (systemd.exec(5)).
    groups = _syscall_groups()
    allowed: set[str] = set()
    lines = [line.split("=", 1)[1].split() for line in unit.read_text().splitlines()
             if line.startswith("SystemCallFilter=")]
    assert lines and not lines[0][0].startswith("~"), "the first filter line must be an allow list"
    for words in lines:
        if words[0].startswith("~"):
            allowed -= _expand([words[0][1:], *words[1:]], groups)
        else:
            allowed |= _expand(words, groups)
    missing = [name for name in (*NEEDED_SYSCALLS, *NEEDED_BY.get(unit.name, ())) if name not in allowed]
    assert not missing, f"{unit.name} denies {missing}"


@pytest.mark.timeout(30)
def test_the_agent_unit_names_no_group_a_bare_host_lacks() -> None:
    # A unit whose supplementary group does not exist does not start (216/GROUP); libvirt's group is the
    # agent's through /etc/group once host setup added it (group_member), not through the unit.
    text = next(unit for unit in UNITS if unit.name == "saltmarsh-agent.service").read_text()
    assert not [line for line in text.splitlines() if line.startswith("SupplementaryGroups=")]
