"""The systemd units parse (systemd-analyze verify) and carry the hardening they promise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).parent.parent / "systemd").glob("*.service"))
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "CapabilityBoundingSet=",
             "RestrictAddressFamilies=", "SystemCallFilter=@system-service", "UMask=0077")


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_is_hardened_and_runs_in_foreground(unit: Path) -> None:
    text = unit.read_text()
    for setting in HARDENING:
        assert setting in text, f"{unit.name} lacks {setting}"
    assert "User=saltmarsh" in text and "User=root" not in text
    assert "-c /etc/saltmarsh" in text and "KillSignal=SIGTERM" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_verify(tmp_path: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, UNITS)],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "is not executable" not in line]  # the venv is not installed at /opt here
    assert problems == []
