"""One daemon per state directory (the lock on root_dir), and the daemons' own umask, on real processes."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from .cluster import BIN, Cluster, Daemon, free_port, wait_until


def refused(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a daemon that must refuse to start (a timeout means it started anyway)."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=20)


def refusal_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a refused start."""
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def busy_message(directory: Path, pid: int) -> str:
    return (f"cannot start: {directory} is the state directory of another running saltmarsh daemon "
            f"(pid {pid}); one daemon per state directory")


def lock_holds(directory: Path, pid: int) -> None:
    lock = directory / "lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert lock.read_text().strip() == str(pid)


def test_a_second_master_on_the_same_root_dir_is_refused_and_the_first_keeps_working(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "first")
    cluster.start_master()
    try:
        state = cluster.master_dir / "state"
        assert cluster.master.proc is not None
        lock_holds(state, cluster.master.proc.pid)
        other = tmp_path / "second"
        other.mkdir()
        (other / "master.yaml").write_text(yaml.safe_dump({
            "interface": "127.0.0.1", "publish_port": free_port(), "request_port": free_port(),
            "root_dir": str(state),
        }))
        result = refused([str(BIN / "saltmarsh-master"), "-c", str(other)])
        assert refusal_line(result).endswith(busy_message(state, cluster.master.proc.pid))
        # The first master's control socket is still there and still answers.
        assert cluster.control_socket.exists()
        assert cluster.cli_json("key", "list") == {"accepted": [], "pending": [], "rejected": []}
        lock_holds(state, cluster.master.proc.pid)
    finally:
        assert cluster.stop()["master"] == 0
    # Its lock went with it: a new master starts on the same directory.
    cluster.start_master()
    cluster.stop()


def test_a_second_agent_on_the_same_root_dir_is_refused(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    cluster.start_master()
    try:
        cluster.start_agents("hv1")
        first = cluster.agents["hv1"]
        assert first.proc is not None
        state = first.config_dir / "state"
        lock_holds(state, first.proc.pid)
        twin = cluster.agent_config("hv2", root_dir=str(state))
        result = refused([str(BIN / "saltmarsh-agent"), "-c", str(twin)])
        assert refusal_line(result).endswith(busy_message(state, first.proc.pid))
        assert cluster.cli_json("run", "hv1", "test.ping") == {"hv1": True}
        assert "hv2" not in cluster.pending()
    finally:
        cluster.stop()


@pytest.mark.timeout(90)
def test_swarm_members_lock_their_own_root_dirs(tmp_path: Path) -> None:
    config_dir = tmp_path / "sw"
    config_dir.mkdir()
    (config_dir / "agent.yaml").write_text(yaml.safe_dump({
        "id": "sw", "master": "127.0.0.1", "publish_port": free_port(), "request_port": free_port(),
        "root_dir": "state", "libvirt_uri": "test:///default", "auth_retry_seconds": 0.3,
    }))
    swarm = ["-m", "saltmarsh.agent.swarm", "-c", str(config_dir)]
    first = Daemon("swarm", config_dir, [str(BIN / "python"), *swarm, "--count", "2", "--first", "0"])
    first.start()
    try:
        assert first.proc is not None
        member = config_dir / "state" / "sw-00001"
        wait_until(lambda: (member / "lock").exists() and (member / "lock").read_text().strip(),
                   what="the swarm's members to lock their root dirs")
        lock_holds(member, first.proc.pid)
        # A swarm over other members of the same agent.yaml runs beside it (as bench/swarm.py does) ...
        beside = Daemon("beside", tmp_path, [str(BIN / "python"), *swarm, "--count", "1", "--first", "2"])
        beside.start()
        try:
            wait_until(lambda: (config_dir / "state" / "sw-00002" / "pki" / "agent.key").exists(),
                       what="the second swarm to start")
            assert beside.alive()
        finally:
            assert beside.stop() == 0
        # ... one that overlaps is refused, naming the member's directory and its holder.
        result = refused([str(BIN / "python"), *swarm, "--count", "2", "--first", "1"])
        assert refusal_line(result).endswith(busy_message(member, first.proc.pid))
        assert first.alive()
    finally:
        assert first.stop() == 0, first.log()[-3000:]


def umask_0(argv: list[str]) -> list[str]:
    """``argv`` started from a shell whose umask is 000 (exec keeps the pid, so stopping it stops the daemon)."""
    return ["sh", "-c", 'umask 000 && exec "$0" "$@"', *argv]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_daemons_started_with_umask_0_create_private_state(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    cluster.master.argv = umask_0(cluster.master.argv)
    cluster.start_master()
    try:
        config_dir = cluster.agent_config("hv1")
        agent = Daemon("hv1", config_dir, umask_0([str(BIN / "saltmarsh-agent"), "-c", str(config_dir)]))
        agent.start()
        cluster.agents["hv1"] = agent
        cluster.accept("hv1")
        assert cluster.cli_json("run", "hv1", "test.echo", "x") == {"hv1": "x"}  # the spool and job cache in use
        master_state, agent_state = cluster.master_dir / "state", config_dir / "state"
        assert mode(master_state) == 0o700 and mode(master_state / "pki") == 0o700
        # Traversable by QEMU for the image cache under it, never listable or writable by others.
        assert mode(agent_state) == 0o711 and mode(agent_state / "pki") == 0o700
        private = [master_state / "jobs.sqlite", agent_state / "spool.sqlite", master_state / "lock",
                   agent_state / "lock", agent_state / "pki" / "agent.key", master_state / "pki" / "master.key"]
        for path in private:
            assert mode(path) == 0o600, (path, oct(mode(path)))
        # Everything else either daemon made: no directory others may list or write, no file others may write
        # (public keys and the CA certificate are 0644 on purpose, inside those 0700 directories).
        for state in (master_state, agent_state):
            for root, dirs, files in os.walk(state):
                for name in dirs:
                    assert mode(Path(root) / name) & 0o066 == 0, (root, name, oct(mode(Path(root) / name)))
                for name in files:
                    assert mode(Path(root) / name) & 0o022 == 0, (root, name, oct(mode(Path(root) / name)))
    finally:
        assert set(cluster.stop().values()) == {0}
