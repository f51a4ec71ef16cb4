"""The bus benchmark runs end to end (`python -m bench.bus --quick`): behaviour, not speed."""

from __future__ import annotations

import re
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


@pytest.mark.timeout(180)
def test_bench_swarm_small_prints_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.swarm", "--agents", "20", "--processes", "2", "--repeat", "1",
         "--events", "2000"],
        cwd=ROOT, capture_output=True, text=True, timeout=170,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()
    for measure in ("'*' test.ping", "master CPU per ping", "events/s into the bus", "master RSS", "swarm RSS",
                    "key delete -> all N-1", "master restart -> all N answer"):
        assert any(line.startswith(measure) and " 20 " in line for line in lines), (measure, result.stdout)


@pytest.mark.timeout(120)
def test_bench_soak_short_prints_samples_and_slopes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--agents", "3", "--minutes", "0.3", "--sample-seconds", "6",
         "--events-per-second", "300"],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()
    samples = [line for line in lines if line[:6].strip().replace(".", "").isdigit()]
    assert len(samples) >= 3, result.stdout
    for series in ("master", "agent median", "agent max"):
        assert any(line.startswith(f"slope {series}:") for line in lines), result.stdout
    assert "events in" in result.stdout


@pytest.mark.timeout(60)
def test_bench_publish_small_prints_a_row_per_n() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.publish", "--agents", "1,5", "--repeat", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=55,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()
    header = next((line for line in lines if line.lstrip().startswith("N ")), "")
    assert header.split()[:3] == ["N", "BROADCAST", "CPU"], result.stdout
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0].isdigit()}
    assert set(rows) == {"1", "5"}, result.stdout
    for row in rows.values():
        times = re.findall(r"(-?[\d,]+\.\d) µs", row)
        assert len(times) == 6 and all(float(t.replace(",", "")) > 0 for t in times[:4]), row
        assert re.search(r" [\d,]+\.\dx ", row), row


@pytest.mark.timeout(150)
def test_bench_images_quick_prints_the_fetch_beside_cp() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.images", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=140,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()
    header = next((line for line in lines if line.startswith("MEASURE")), "")
    assert header.split()[:5] == ["MEASURE", "SALTMARSH", "VS", "CP", "TARGET"], result.stdout
    fetch = next((line for line in lines if line.startswith("fetch 64 MiB into an empty cache")), "")
    shown = re.search(r"= ([\d,]+) MB/s +(\d+\.\d\d)x +≥ 0\.50x cp +(yes|NO) +37\.6 MB/s \(ours: ([\d.]+)x that\)",
                      fetch)
    assert shown, result.stdout
    cp = next((line for line in lines if line.startswith("cp 64 MiB")), "")
    cp_rate = re.search(r"= ([\d,]+) MB/s", cp)
    assert cp_rate, result.stdout
    fetch_mb_s, vs_cp, met, vs_salt = (float(shown[1].replace(",", "")), float(shown[2]), shown[3],
                                       float(shown[4]))
    # The ratios are the bench's own divisions of the rates it printed (to their rounding), and MET follows.
    assert abs(vs_cp - fetch_mb_s / float(cp_rate[1].replace(",", ""))) < 0.01 + vs_cp * 0.01, (fetch, cp)
    assert abs(vs_salt - fetch_mb_s / 37.6) < 0.06, fetch
    assert met == ("yes" if vs_cp >= 0.5 else "NO"), fetch
    for measure in ("sha256 64 MiB", "BLAKE3 64 MiB", "sha256sum 64 MiB", "  bound by CPU here",
                    "2 agents fetch a new 64 MiB image at once", "  master CPU over it"):
        assert any(line.startswith(measure) for line in lines), (measure, result.stdout)
    assert "load averages" in result.stdout


@pytest.mark.timeout(240)
def test_bench_cli_startup_quick_prints_each_command_beside_python_and_the_ratio_it_computed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.cli_startup", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=230,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()
    sections = [i for i, line in enumerate(lines) if line.startswith("[")]
    assert [lines[i].split()[0] for i in sections] == ["[PYTHONDONTWRITEBYTECODE=1", "[bytecode"], result.stdout
    row = re.compile(r"(.+?)  +([\d.]+) ms \([\d.]+–[\d.]+\) +([\d.]+)x +(≤ 4x +(yes|NO)|—) +([\d.]+) ms +([\d.]+)x$")
    for start in sections:
        rows = {m.group(1): m for m in map(row.match, lines[start + 1:start + 7])}
        assert list(rows) == ["python3 -c pass", ".venv/bin/python -c pass",
                              ".venv/bin/python -c 'import argparse, msgspec, zmq'", "saltmarsh --help",
                              "saltmarsh key list", "saltmarsh run hv1 test.ping"], result.stdout
        reference = float(rows["python3 -c pass"].group(2))
        for label, match in rows.items():
            # Each ratio is the benchmark's own division of the medians it printed (to their rounding).
            ratio, wall = float(match.group(3)), float(match.group(2))
            assert abs(ratio - wall / reference) <= 0.01 + 0.01 * wall / reference, (label, match.group(0))
        ping = rows["saltmarsh run hv1 test.ping"]
        assert ping.group(5) == ("yes" if float(ping.group(3)) <= 4 else "NO"), ping.group(0)
    assert "load averages:" in result.stdout


@pytest.mark.timeout(240)
def test_bench_http_quick_prints_latencies_and_delivers_every_event() -> None:
    result = subprocess.run([sys.executable, "-m", "bench.http", "--quick"], cwd=ROOT, capture_output=True,
                            text=True, timeout=230)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = {tuple(line.split()[:3]) for line in result.stdout.splitlines() if line.startswith(("GET", "POST"))}
    assert rows == {("GET", "/v1/agents", "1"), ("GET", "/v1/agents", "50"), ("POST", "/v1/jobs", "1"),
                    ("POST", "/v1/jobs", "50")}, result.stdout
    delivered = re.search(r"; ([\d,]+) of ([\d,]+) delivered to 5 WebSocket subscribers", result.stdout)
    assert delivered and delivered.group(1) == delivered.group(2) == "2,500", result.stdout
    assert re.search(r"0 subscriber\(s\) short", result.stdout)
    assert re.search(r"master RSS: [\d.]+ MiB before, [\d.]+ MiB with 5 subscribers", result.stdout)
