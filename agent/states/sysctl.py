"""``sysctl``: a kernel parameter's value now (/proc/sys) and after a reboot (a file in /etc/sysctl.d).

Each key gets its own file, ``60-saltmarsh-<key>.conf``, so that two states never edit one
file and removing a state's file removes exactly its setting. Values are compared with their
whitespace folded, as the kernel prints tabs where ``sysctl -w`` took spaces.
"""

from __future__ import annotations

from pathlib import Path

from saltmarsh.protocol.states import Change, SysctlState

from ..errors import StateError
from . import ABSENT, Facets, Kind
from .files import write_atomic
from .system import ensure_dir


class Sysctl(Kind[SysctlState]):
    """Reads and sets one kernel parameter."""

    request = SysctlState

    def _live(self, state: SysctlState) -> Path:
        return self.system.proc_sys / state.key.replace(".", "/")

    def _persisted(self, state: SysctlState) -> Path:
        return self.system.sysctl_dir / f"60-saltmarsh-{state.key}.conf"

    def current(self, state: SysctlState) -> Facets:
        """The live value, and the line that persists it (``-`` if none)."""
        try:
            live = fold(self._live(state).read_text())
        except FileNotFoundError:
            raise StateError(f"no kernel parameter {state.key} on this host") from None
        except OSError as exc:
            raise StateError(f"{state.key}: {exc.strerror or exc}") from exc
        try:
            persisted = self._persisted(state).read_text().strip()
        except FileNotFoundError:
            persisted = ABSENT
        except OSError as exc:
            raise StateError(f"{self._persisted(state)}: {exc.strerror or exc}") from exc
        return {"value": live, "persisted": persisted}

    def desired(self, state: SysctlState) -> Facets:
        """The value, and its line in /etc/sysctl.d."""
        return {"value": fold(state.value), "persisted": _line(state)}

    def apply(self, state: SysctlState, changes: dict[str, Change]) -> None:
        """Write the value into /proc/sys and its file into /etc/sysctl.d."""
        if "value" in changes:
            try:
                self._live(state).write_text(state.value + "\n")
            except OSError as exc:
                raise StateError(f"{state.key} = {state.value}: {exc.strerror or exc}") from exc
        if "persisted" in changes:
            ensure_dir(self.system.sysctl_dir)
            write_atomic(self._persisted(state), (_line(state) + "\n").encode(), 0o644, 0, 0)


def fold(text: str) -> str:
    """A sysctl value with its runs of whitespace made one space."""
    return " ".join(text.split())


def _line(state: SysctlState) -> str:
    return f"{state.key} = {fold(state.value)}"
