"""The bus benchmark runs end to end (`python -m bench.bus --quick`): behaviour, not speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(60)
def test_bench_bus_quick_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.bus", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=55,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()
    header = next((line for line in lines if line.startswith("MEASURE")), "")
    assert header.split()[:5] == ["MEASURE", "N", "SALTMARSH", "TARGET", "MET"], result.stdout
    for measure in ("ping: CLI", "events into the master bus", "master RSS", "agent RSS"):
        assert any(line.startswith(measure) for line in lines), (measure, result.stdout)
    assert "Salt 3008.4, measured on a 2-core machine" in result.stdout
    assert "LOST" not in result.stdout, result.stdout
