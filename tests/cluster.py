"""Real daemons for tests and benchmarks: a master and agents as processes on loopback.

Each Cluster gets its own directory, free ports, and freshly generated keys;
nothing here fakes a part of saltmarsh.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def venv_reachable_by_others() -> Iterator[None]:
    """Let other users reach the venv's commands while in the block (tests that run the CLI as nobody).

    A checkout in a private directory (``mktemp -d`` makes it 0700) hides the venv and the editable
    install from every other user; only the search bit is added, to the directories that lack it,
    and each gets its own mode back afterwards.
    """
    changed = []
    for directory in (BIN, *BIN.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            changed.append((directory, stat.S_IMODE(mode)))
    try:
        yield
    finally:
        for directory, mode in changed:
            directory.chmod(mode)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class Daemon:
    """A daemon process with its config dir and log file."""

    name: str
    config_dir: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.config_dir / "daemon.log"

    def start(self) -> None:
        """Start the process, appending to its log."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def log(self) -> str:
        """Everything the daemon has logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` and wait; returns the exit code (kills after ``timeout``)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def pause(self) -> None:
        """SIGSTOP the process."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the process."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class Cluster:
    """One master and any number of agents, each a real process, on 127.0.0.1."""

    def __init__(self, base: Path, **master_settings: Any) -> None:
        self.base = base
        self.publish_port = free_port()
        self.request_port = free_port()
        self.master_dir = base / "master"
        self.master_dir.mkdir(parents=True, exist_ok=True)
        settings = {
            "interface": "127.0.0.1",
            "publish_port": self.publish_port,
            "request_port": self.request_port,
            "root_dir": "state",
            "heartbeat_seconds": 1.0,
            "log_level": "debug",
        }
        settings.update(master_settings)
        self.http_listen: str | None = master_settings.get("http", {}).get("listen")  # host:port, if the API is on
        (self.master_dir / "master.yaml").write_text(yaml.safe_dump(settings))
        self.master = Daemon("master", self.master_dir, [str(BIN / "saltmarsh-master"), "-c", str(self.master_dir)])
        self.agents: dict[str, Daemon] = {}

    @property
    def control_socket(self) -> Path:
        """The master's control socket."""
        return self.master_dir / "state" / "control" / "master.sock"

    def start_master(self) -> None:
        """Start the master and wait until it answers on its control socket."""
        self.master.start()
        wait_until(lambda: self.cli("key", "list", check=False).returncode == 0, what="master to answer")

    def agent_config(self, agent_id: str, **settings: Any) -> Path:
        """Write an agent's config (defaults pointed at this master) and return its dir."""
        config_dir = self.base / "agents" / agent_id
        config_dir.mkdir(parents=True, exist_ok=True)
        values = {
            "id": agent_id,
            "master": "127.0.0.1",
            "publish_port": self.publish_port,
            "request_port": self.request_port,
            "root_dir": "state",
            "libvirt_uri": "test:///default",
            "auth_retry_seconds": 0.3,
            "request_timeout_seconds": 2.0,
            "log_level": "debug",
        }
        values.update(settings)
        (config_dir / "agent.yaml").write_text(yaml.safe_dump(values))
        return config_dir

    def start_agent(self, agent_id: str, **settings: Any) -> Daemon:
        """Start an agent process (its key stays pending until accepted)."""
        config_dir = self.agent_config(agent_id, **settings)
        daemon = Daemon(agent_id, config_dir, [str(BIN / "saltmarsh-agent"), "-c", str(config_dir)])
        daemon.start()
        self.agents[agent_id] = daemon
        return daemon

    def cli(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``saltmarsh -c <master dir> ARGS`` and return its result."""
        result = subprocess.run(
            [str(BIN / "saltmarsh"), "-c", str(self.master_dir), *args],
            capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"saltmarsh {' '.join(args)} exited {result.returncode}: {result.stderr}{result.stdout}"
            )
        return result

    def cli_json(self, *args: str) -> Any:
        """Run a CLI command with --json and parse its output."""
        return json.loads(self.cli(*args, "--json").stdout)

    def subscriptions(self) -> int:
        """How many event subscriptions the master holds now (``master.ping``): a subscriber's handshake."""
        from saltmarsh.master.control.client import MasterClient

        with MasterClient.from_config_dir(self.master_dir) as client:
            return int(client.call("master.ping")["subscriptions"])

    def pending(self) -> list[str]:
        """Ids whose keys are pending."""
        return list(self.cli_json("key", "list")["pending"])

    def accept(self, *agent_ids: str) -> None:
        """Wait for each agent's key to be pending, accept it, and wait until the agent answers a ping."""
        for agent_id in agent_ids:
            wait_until(lambda a=agent_id: a in self.pending(), what=f"{agent_id}'s key to be pending")
            self.cli("key", "accept", agent_id)
        self.wait_answering(*agent_ids)

    def wait_answering(self, *agent_ids: str, timeout: float = 20.0) -> None:
        """Wait until every agent answers test.ping."""
        def answered() -> bool:
            result = self.cli("run", "-L", ",".join(agent_ids), "test.ping", "--json", "--timeout", "1", check=False)
            try:
                return set(json.loads(result.stdout or "{}")) == set(agent_ids)
            except json.JSONDecodeError:
                return False
        wait_until(answered, timeout=timeout, interval=0.2, what=f"{agent_ids} to answer test.ping")

    def start_agents(self, *agent_ids: str, **settings: Any) -> None:
        """Start agents and accept them."""
        for agent_id in agent_ids:
            self.start_agent(agent_id, **settings)
        self.accept(*agent_ids)

    def stop(self) -> dict[str, int]:
        """Stop every daemon with SIGTERM; return their exit codes by name."""
        codes = {name: d.stop() for name, d in self.agents.items()}
        codes["master"] = self.master.stop()
        return codes

    def print_log_tails(self, daemons: int = 10, chars: int = 3000) -> None:
        """The tail of the master's log and the first agents', on stderr: what a benchmark shows on failure."""
        for daemon in [self.master, *self.agents.values()][:daemons]:
            print(f"----- {daemon.name} log (tail) -----\n{daemon.log()[-chars:]}", file=sys.stderr)




class EventRecorder:
    """Records the master's events matching a pattern, in a thread, through the Python API.

    ``ready(agent)`` makes ``agent`` fire probe events until one is recorded, so a test knows the
    subscription is live before it acts. Recording ends after ``idle_timeout`` seconds without events.
    """

    def __init__(self, cluster: Cluster, pattern: str, idle_timeout: float = 5.0) -> None:
        from saltmarsh.master.control.client import MasterClient

        self.events: list[Any] = []
        self._cluster = cluster
        self._pattern = pattern
        self._client = MasterClient.from_config_dir(cluster.master_dir)
        self._thread = threading.Thread(target=self._record, args=(idle_timeout,), daemon=True)
        self._thread.start()

    def _record(self, idle_timeout: float) -> None:
        from saltmarsh.master.errors import NotRunning

        try:
            for event in self._client.events(self._pattern, idle_timeout=idle_timeout):
                self.events.append(event)
        except NotRunning:
            pass  # the test stopped the master: recording ends with what it had
        finally:
            # Closed by the thread that used it, when recording ends, even if the test failed before
            # close(): a client left to the garbage collector was once closed inside a later test,
            # where closing its ZeroMQ context blocked and the suite's timeout ended the whole run.
            self._client.close()

    def ready(self, agent_id: str, probe: str) -> None:
        """Block until ``agent_id`` has fired ``probe`` (a tag under the pattern) and it was recorded."""
        def seen() -> bool:
            self._cluster.cli("run", agent_id, "event.send", probe, "1")
            return any(e.tag == probe for e in self.events)
        wait_until(seen, timeout=15, interval=0.2, what="the event subscription to be live")

    def recording(self) -> bool:
        """Whether it still records (it ends after its idle timeout, or when the master stops)."""
        return self._thread.is_alive()

    def tags(self) -> list[str]:
        """Tags recorded so far."""
        return [e.tag for e in self.events]

    def close(self) -> None:
        """Wait for recording to end (idle timeout); the recording thread closes the client."""
        self._thread.join(timeout=60)
