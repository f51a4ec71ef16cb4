"""The same install everywhere: what the set-up installed is exactly what constraints.txt pins."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)$")
# In every venv from the start; pip itself is pinned and checked, these two are not ours to pin.
VENV_BASICS = {"setuptools", "wheel"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt: {line!r} is not NAME==VERSION"
        pins[_normal(match.group(1))] = match.group(2)
    return pins


def test_every_installed_package_is_the_pinned_version() -> None:
    pins = _pins()
    installed = {_normal(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    installed.pop("saltmarsh")
    unpinned = sorted(set(installed) - set(pins) - VENV_BASICS)
    assert not unpinned, f"installed but not pinned in constraints.txt: {unpinned}"
    wrong = {name: (version, pins[name]) for name, version in installed.items()
             if name in pins and name not in VENV_BASICS and version != pins[name]}
    assert not wrong, f"installed version differs from its pin (installed, pinned): {wrong}"


def test_every_declared_dependency_is_pinned() -> None:
    pins = _pins()
    requires = importlib.metadata.requires("saltmarsh") or []
    names = {_normal(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requires}
    assert names and not names - set(pins), f"declared in setup.cfg but not pinned: {sorted(names - set(pins))}"
