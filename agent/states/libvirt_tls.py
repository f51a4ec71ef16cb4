"""``libvirt_tls``: libvirtd listening on TLS with the certificates the agent got from the master's CA (issue 5).

The agent makes its own keys, has the master sign them, and keeps them in its ``pki_root``
(agent/tls.py), which for the sandboxed agent is its state directory. This state copies them
into libvirt's default layout (/etc/pki: the paths libvirtd reads, and reloads from), keys 0600
root, and has systemd listen on the TLS port (``libvirtd-tls.socket``: Debian's libvirtd is
socket-activated, so libvirtd is stopped while the socket starts and then started on it). The
facets are each file's digest and mode, the socket's state, and whether the port is listened
on. Files are read without following a symbolic link: the agent's user owns that directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from saltmarsh.protocol.states import Change, LibvirtTlsState

from ..errors import StateError
from . import ABSENT, Facets, Kind
from .files import digest, write_atomic
from .system import ensure_dir

# libvirt's layout: path under the root -> mode (private keys are root's alone)
FILES = {"CA/cacert.pem": 0o644, "CA/cacrl.pem": 0o644, "libvirt/servercert.pem": 0o644,
         "libvirt/private/serverkey.pem": 0o600, "libvirt/clientcert.pem": 0o644,
         "libvirt/private/clientkey.pem": 0o600}
MAX_PEM = 64 * 1024
LISTENING = "listening"


class LibvirtTls(Kind[LibvirtTlsState]):
    """Copies the agent's libvirt certificates into /etc/pki and starts libvirtd's TLS socket."""

    request = LibvirtTlsState

    def current(self, state: LibvirtTlsState) -> Facets:
        """Each file's digest and mode in the target, the socket's state, and whether the port is listened on."""
        facets = {name: _shown(Path(state.target) / name) for name in FILES}
        return {**facets, "socket": self._socket(state), LISTENING: self._listening(state)}

    def desired(self, state: LibvirtTlsState) -> Facets:
        """The agent's files with libvirt's modes, the socket enabled and active, the port listened on."""
        facets = {name: f"{digest(_source(state, name))} {mode:04o}" for name, mode in FILES.items()}
        return {**facets, "socket": "enabled, active", LISTENING: "yes"}

    def apply(self, state: LibvirtTlsState, changes: dict[str, Change]) -> None:
        """Write the files that differ, then (re)start libvirtd on its TLS socket."""
        for name, mode in FILES.items():
            if name in changes:
                path = Path(state.target) / name
                ensure_dir(path.parent)
                write_atomic(path, _source(state, name), mode, 0, 0)
        # libvirtd takes its sockets from systemd only when it starts, and reads certificates only then.
        # Its other sockets are stopped with it: a client connecting meanwhile (the agent itself, once
        # it is in libvirt's group) would start libvirtd again through them, and systemd refuses to
        # start a socket whose service is already running.
        sockets = self._active_sockets()
        self.system.run(["systemctl", "stop", "libvirtd.service", *sockets])
        self.system.run(["systemctl", "enable", "--now", state.socket])
        self.system.run(["systemctl", "start", *[s for s in sockets if s != state.socket], "libvirtd.service"])

    def _active_sockets(self) -> list[str]:
        """libvirtd's socket units now active (any of them starts it when a client connects)."""
        listed = self.system.run(["systemctl", "list-units", "--plain", "--no-legend", "--state=active",
                                  "libvirtd*.socket"], check=False)
        return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]

    def _socket(self, state: LibvirtTlsState) -> str:
        enabled = self.system.run(["systemctl", "is-enabled", state.socket], check=False).stdout.strip() or ABSENT
        active = self.system.run(["systemctl", "is-active", state.socket], check=False).stdout.strip()
        return f"{enabled}, {active}"

    def _listening(self, state: LibvirtTlsState) -> str:
        found = self.system.run(["ss", "-H", "-l", "-t", "-n", f"sport = :{state.port}"], check=False)
        return "yes" if found.stdout.strip() else "no"


def _source(state: LibvirtTlsState, name: str) -> bytes:
    """The agent's copy of ``name``; StateError if it has none (libvirt_tls not on in agent.yaml)."""
    path = Path(state.source) / name
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise StateError(f"the agent has no {path}: set libvirt_tls: true and pki_root: {state.source} in "
                         "agent.yaml so that it gets its certificates from the master") from None
    except OSError as exc:
        raise StateError(f"{path}: {exc.strerror or exc}") from exc
    with os.fdopen(handle, "rb") as source:
        data = source.read(MAX_PEM + 1)
    if len(data) > MAX_PEM:
        raise StateError(f"{path} is over {MAX_PEM} bytes: not a PEM file")
    return data


def _shown(path: Path) -> str:
    try:
        return f"{digest(path.read_bytes())} {path.stat().st_mode & 0o7777:04o}"
    except FileNotFoundError:
        return ABSENT
    except OSError as exc:
        raise StateError(f"{path}: {exc.strerror or exc}") from exc
