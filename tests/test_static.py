"""The code stays ruff-clean and mypy --strict clean (the packages as installed: saltmarsh.*)."""

from __future__ import annotations

import ast
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


# Which packages each may import: the master and the agent share only protocol and pki.
MAY_NOT_IMPORT = {"master": ("agent",), "agent": ("master",), "protocol": ("master", "agent"),
                  "pki": ("master", "agent")}


def _imported_modules(path: Path, package: str) -> set[str]:
    """Every absolute module ``path`` imports, relative imports resolved against its place in ``package``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = ["saltmarsh", package, *path.relative_to(ROOT / package).with_suffix("").parts]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:-node.level]
                found.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                found.add(node.module)
    return found


def test_master_and_agent_never_import_each_other() -> None:
    crossings = []
    for package, forbidden in MAY_NOT_IMPORT.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in _imported_modules(path, package):
                parts = module.split(".")
                names = parts[1:2] if parts[0] == "saltmarsh" else parts[:1]
                if names and names[0] in forbidden:
                    crossings.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not crossings, "\n".join(crossings)
