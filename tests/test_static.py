"""The code stays ruff-clean and mypy --strict clean (the packages as installed: saltmarsh.*)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PACKAGES = ("master", "agent", "protocol", "pki")


def test_ruff() -> None:
    result = subprocess.run([str(BIN / "ruff"), "check", str(ROOT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict(tmp_path: Path) -> None:
    # The folders install under the saltmarsh namespace (setup.cfg package_dir); give mypy the same view.
    (tmp_path / "saltmarsh").mkdir()
    for package in PACKAGES:
        (tmp_path / "saltmarsh" / package).symlink_to(ROOT / package)
    args = [str(BIN / "mypy"), "--strict", "--config-file", str(ROOT / "setup.cfg"),
            "--cache-dir", str(tmp_path / ".mypy_cache")]
    for package in PACKAGES:
        args += ["-p", f"saltmarsh.{package}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
