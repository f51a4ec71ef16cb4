"""The request-channel fuzz target (fuzz/fuzz_envelope.py) runs for a bounded time and finds nothing.

Skipped where atheris is not installed (it is in the ``test`` extras). The
well-formed seeds (fuzz/seeds/) and the inputs that once made the target fail
(fuzz/regressions/) are run first; new corpus entries and any crash artifact go to the test's temporary
directory, never into the work tree.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "fuzz" / "fuzz_envelope.py"
SECONDS = 20


@pytest.mark.timeout(SECONDS + 150)
def test_fuzz_target_runs_clean_for_a_while(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install atheris, or the package's test extras)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = subprocess.run(
        [sys.executable, str(TARGET), f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=1024",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1", str(corpus), str(ROOT / "fuzz" / "seeds"),
         str(ROOT / "fuzz" / "regressions")],
        capture_output=True, text=True, timeout=SECONDS + 120, cwd=tmp_path,
    )
    output = result.stderr + result.stdout
    assert result.returncode == 0, output[-6000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*")), output[-6000:]
    runs = re.search(r"stat::number_of_executed_units:\s+(\d+)", output)
    assert runs and int(runs.group(1)) > 1000, output[-3000:]  # it really ran, and fast enough to matter
    print(f"fuzz_envelope: {runs.group(1)} inputs in {SECONDS} s, no failure")
