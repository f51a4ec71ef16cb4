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
        ("publish_prot: 1\n", "unknown field `publish_prot`"),
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
        ("colour: blue\n", "unknown field `colour`"),
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
    assert "unknown field `no_such_key`" in result.stderr and file in result.stderr
