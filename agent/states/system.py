"""The host the states act on: its commands, its /proc/sys and /etc paths, and its OS family.

One System per run. Paths are fields so that a test can point a kind at a directory of its
own (the real ones are the defaults); commands run for real, with a timeout, their output
captured, and a failure becomes StateError naming the command and its last lines of error.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StateError

COMMAND_TIMEOUT = 1800.0  # a package install over a slow mirror; the helper's own timeout is the backstop
ERROR_LINES = 5
# Commands get a known environment: no locale translation of messages we read, no prompts.
COMMAND_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
FAMILIES = {"debian": "debian", "ubuntu": "debian", "rhel": "redhat", "fedora": "redhat", "centos": "redhat",
            "rocky": "redhat", "almalinux": "redhat"}


@dataclass
class System:
    """Where the states look and how they run commands."""

    proc_sys: Path = Path("/proc/sys")
    sysctl_dir: Path = Path("/etc/sysctl.d")
    os_release: Path = Path("/etc/os-release")
    network_dir: Path = Path("/etc/systemd/network")
    interfaces_file: Path = Path("/etc/network/interfaces")
    # Where a guarded network change keeps the config it replaced until the agent confirms (or it is restored).
    rollback_dir: Path = Path("/var/lib/saltmarsh/setup/rollback")
    command_timeout: float = COMMAND_TIMEOUT
    # The master's address as the agent reaches it ("": unknown, nothing is guarded), and how to ask the
    # agent whether it reaches the master again (state name, seconds to wait) -> it did.
    master_ip: str = ""
    confirm: Callable[[str, float], bool] = field(default=lambda _state, _seconds: False)
    # What this run has done once already (apt-get update): a second pkg state needs it no more.
    done: set[str] = field(default_factory=set)

    def run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` (no shell); StateError if it cannot start, times out, or (``check``) exits non-zero."""
        try:
            # umask 022: the helper runs under a daemon's 077, but packages' maintainer scripts create
            # files others must read (libvirt's config, its sockets' directories).
            result = subprocess.run(argv, capture_output=True, text=True, errors="replace", env=COMMAND_ENV,
                                    stdin=subprocess.DEVNULL, timeout=self.command_timeout, check=False,
                                    umask=0o022)
        except FileNotFoundError as exc:
            raise StateError(f"{argv[0]}: not installed on this host") from exc
        except subprocess.TimeoutExpired as exc:
            raise StateError(f"{' '.join(argv)}: no end after {self.command_timeout:.0f} s") from exc
        except OSError as exc:
            raise StateError(f"{argv[0]}: cannot run: {exc.strerror or exc}") from exc
        if check and result.returncode != 0:
            raise StateError(f"{' '.join(argv)} exited {result.returncode}: {tail(result.stderr or result.stdout)}")
        return result

    def os_family(self) -> str:
        """``debian`` or ``redhat`` from /etc/os-release (ID, then ID_LIKE); StateError for any other."""
        fields = read_os_release(self.os_release)
        for name in [fields.get("ID", ""), *fields.get("ID_LIKE", "").split()]:
            if name in FAMILIES:
                return FAMILIES[name]
        raise StateError(f"{self.os_release}: ID {fields.get('ID', '?')!r} is neither a Debian nor a Red Hat system")


def read_os_release(path: Path) -> dict[str, str]:
    """The KEY=value lines of an os-release file, quotes removed; StateError if it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise StateError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def tail(text: str) -> str:
    """The last ERROR_LINES non-empty lines of a command's output, joined into one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-ERROR_LINES:]) or "(no output)"


def ensure_dir(path: Path) -> None:
    """Create ``path`` (0755 whatever the umask, parents too) if it is missing."""
    if not path.is_dir():
        ensure_dir(path.parent)
        path.mkdir(exist_ok=True)
        path.chmod(0o755)
