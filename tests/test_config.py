"""Config files: defaults, unknown keys, bad values, relative root_dir; daemons refuse bad config at start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from saltmarsh.agent.config import load_agent_config
from saltmarsh.master.config import load_master_config
from saltmarsh.protocol.errors import ConfigError

from .cluster import BIN


def test_missing_file_means_all_defaults(tmp_path: Path) -> None:
    master = load_master_config(tmp_path)
    assert (master.interface, master.publish_port, master.request_port) == ("0.0.0.0", 4605, 4606)
    assert master.root_dir == Path("/var/lib/saltmarsh/master") and master.auto_accept is False
    agent = load_agent_config(tmp_path)
    assert agent.libvirt_uri == "qemu:///system" and agent.master_fingerprint is None and agent.labels == {}
    assert agent.agent_id  # the host name


def test_relative_root_dir_is_under_the_config_dir(tmp_path: Path) -> None:
    (tmp_path / "master.yaml").write_text("root_dir: state\n")
    assert load_master_config(tmp_path).root_dir == tmp_path.resolve() / "state"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("publish_prot: 1\n", "unknown key `$.publish_prot`"),
        ("pki: {ca_dayz: 1}\n", "unknown key `$.pki.ca_dayz`"),
        ("publish_port: 70000\n", "publish_port"),
        ("auto_accept: maybe\n", "auto_accept"),
        ("log_level: loud\n", "log_level"),
        ("- a list\n", "mapping"),
        ("interface: [unclosed\n", "YAML"),
    ],
)
def test_bad_master_config_is_a_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "master.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_master_config(tmp_path)
    assert fragment in str(info.value) and "master.yaml" in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("id: ../x\n", "not a safe name"),
        ("labels: {a: [1]}\n", "labels"),
        ("worker_threads: 0\n", "worker_threads"),
        ("colour: blue\n", "unknown key `$.colour`"),
    ],
)
def test_bad_agent_config_is_a_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "agent.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_agent_config(tmp_path)
    assert fragment in str(info.value)


@pytest.mark.parametrize("daemon,file", [("saltmarsh-master", "master.yaml"), ("saltmarsh-agent", "agent.yaml")])
def test_daemon_refuses_bad_config_at_start(tmp_path: Path, daemon: str, file: str) -> None:
    (tmp_path / file).write_text("no_such_key: 1\n")
    result = subprocess.run([str(BIN / daemon), "-c", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "unknown key `$.no_such_key`" in result.stderr and file in result.stderr


DAEMONS = [("saltmarsh-master", "master.yaml"), ("saltmarsh-agent", "agent.yaml")]


def start_and_fail(daemon: str, config_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run a daemon that must refuse to start; a hang (an old daemon starting anyway) fails on the timeout."""
    return subprocess.run([str(BIN / daemon), "-c", str(config_dir)], capture_output=True, text=True, timeout=20)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The daemon's whole stderr, which must be exactly one line and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("daemon,file", DAEMONS)
def test_a_config_dir_that_does_not_exist_is_an_error(tmp_path: Path, daemon: str, file: str) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    result = start_and_fail(daemon, missing)
    assert result.returncode == 2
    assert one_line(result) == f"{daemon}: config directory {missing} does not exist"
    assert not missing.exists()
    a_file = tmp_path / file
    a_file.write_text("log_level: debug\n")
    result = start_and_fail(daemon, a_file)
    assert result.returncode == 2
    assert one_line(result) == f"{daemon}: {a_file} is not a directory (-c names the directory that holds {file})"


@pytest.mark.parametrize("daemon,file", DAEMONS)
@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"\xff\xfe\x00binary\x80\x81", "not UTF-8 text"),
        (b"log_level: info\x00\n", "not valid YAML"),
        (b"max_frame_bytes: 99999999999999999999\n", "`$.max_frame_bytes`: integer out of range"),
        (b"max_frame_bytes: -99999999999999999999\n", "`$.max_frame_bytes`: integer out of range"),
        (b"max_frame_bytes: " + b"9" * 5000 + b"\n", "a value cannot be read"),
        (b"freshness_seconds: .inf\n", "`$.freshness_seconds`: must be a finite number"),
        (b"log_level: [unclosed\n", "not valid YAML"),
    ],
)
def test_unreadable_or_out_of_range_config_is_one_line_and_exit_2(
        tmp_path: Path, daemon: str, file: str, content: bytes, fragment: str) -> None:
    (tmp_path / file).write_bytes(content)
    result = start_and_fail(daemon, tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith(f"{daemon}: {tmp_path / file}: ") and fragment in line, line


def test_a_nested_huge_integer_is_named_by_its_path(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text("virt:\n  disk_profiles:\n    big: [{size_mib: 99999999999999999999}]\n")
    with pytest.raises(ConfigError) as info:
        load_agent_config(tmp_path)
    assert "`$.virt.disk_profiles.big[0].size_mib`: integer out of range" in str(info.value)


def test_a_config_file_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "master.yaml").mkdir()
    with pytest.raises(ConfigError) as info:
        load_master_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'master.yaml'}: cannot be read: ")


def test_the_daemon_logs_which_config_file_it_read(tmp_path: Path) -> None:
    from .cluster import Cluster

    cluster = Cluster(tmp_path)
    cluster.start_master()
    try:
        assert f"config read from {cluster.master_dir / 'master.yaml'}" in cluster.master.log()
    finally:
        assert cluster.stop()["master"] == 0


# daemon_main with a config of its own, so that "no file" does not mean the real /var/lib/saltmarsh.
PROBE = '''
import sys
from dataclasses import dataclass
from pathlib import Path
from saltmarsh.protocol.daemon import DaemonSpec, daemon_main

@dataclass(frozen=True)
class Probe:
    root_dir: Path
    root_dir_mode: int = 0o700

class Done:
    async def run(self, stop):
        pass

spec = DaemonSpec(prog="probe", description="", config_file="probe.yaml", default_config_dir=Path("/nonexistent"),
                  load_config=lambda _: Probe(Path(sys.argv[1])), log_level_of=lambda _: "info",
                  build=lambda _: Done(), fatal=(OSError,))
sys.exit(daemon_main(spec, ["-c", sys.argv[2]]))
'''


def test_the_daemon_logs_that_it_used_defaults_when_the_file_is_absent(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    result = subprocess.run([str(BIN / "python"), "-c", PROBE, str(tmp_path / "state"), str(config_dir)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"no {config_dir / 'probe.yaml'}: every setting is its default" in result.stderr
