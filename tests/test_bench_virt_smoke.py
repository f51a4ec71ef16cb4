"""The virt benchmark runs end to end (`python -m bench.virt --quick`): behaviour, not speed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(200)
def test_bench_virt_quick_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.virt", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()
    header = next((line for line in lines if line.startswith("MEASURE")), "")
    assert header.split()[:5] == ["MEASURE", "SALTMARSH", "TARGET", "MET", "SALT"], result.stdout
    assert "SALT 3008.4 (2-core machine)" in header
    for measure in ("virt query (all 90 VMs)", "virt host-info", "virt list", "run '*' virt.full_info",
                    "run m0 virt.vm_state m0-vm05", "virt pause m0-vm05", "virt init on real QEMU",
                    "image 64 MiB: fetch into an empty cache", "image 64 MiB: second fetch (cached)"):
        assert any(line.startswith(measure) for line in lines), (measure, result.stdout)
    query = next(line for line in lines if line.startswith("virt query"))
    # What the benchmark computed, not the constant it prints beside it: the lines our query printed
    # (every VM of the 90 on at least one), and Salt's 3.79 s divided by our median.
    printed = re.search(r", ([\d,]+) lines of output +(\d+\.\d{3}) s ", query)
    assert printed, query
    assert int(printed.group(1).replace(",", "")) > 90, query
    ours = float(printed.group(2))
    times_faster = re.search(r" (\d+)× *$", query)
    assert times_faster and abs(int(times_faster.group(1)) - 3.79 / ours) <= 1, query
    assert "Salt 3008.4, measured on a 2-core machine" in result.stdout
