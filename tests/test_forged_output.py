"""Output an agent cannot forge: malformed tags are refused at both ends, and every human printer escapes agent text.

An agent controls its events' tags and data, its job results and error messages, and what
its inventory says (VM names, states, drivers). None of it may reach an operator's terminal
as raw control characters: a newline would let it print a line that reads as another
agent's job return, an ANSI escape would let it recolour or clear the screen. The tests
use real daemons; where the real agent refuses a hostile tag itself, a hand-driven agent
(tests/wire.py) sends the frames it would not.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from typing import Any

import pytest
import zmq

from saltmarsh.protocol.messages import Ack, AgentEvent, Events

from .cluster import BIN, Cluster, wait_until
from .wire import EventWatch, RawAgent, count, register_raw_agent

FORGED_LINE = '20:00:00.000 saltmarsh/job/FAKE/ret/hv2 {"result": "pwned"}'
# Tags a hostile agent would like to fire, one per kind of character that must not pass.
HOSTILE_TAGS = {
    "newline": f"app/x\n{FORGED_LINE}",
    "carriage return": f"app/x\r{FORGED_LINE}",
    "ANSI escape": "app/\x1b[31mred\x1b[0m",
    "NUL": "app/a\x00b",
    "DEL": "app/a\x7fb",
    "C1 control": "app/a\x9bb",
    "leading space": f" {FORGED_LINE.split(' ', 2)[1]}",
    "bidi override": "app/\u202eevil",
    "line separator": "app/a\u2028b",
    "non-ASCII": "app/caf\u00e9",
}
# Text an agent would like printed: every way of breaking out of its line or its colour.
HOSTILE_TEXT = f"\x1b[2J\x1b[31mred\n{FORGED_LINE}\r\u202eevil\u2028\x85end\x07"
LINE_START = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} saltmarsh/job/FAKE", re.MULTILINE)


def assert_terminal_safe(text: str) -> None:
    """Every character printable (newlines only between lines), and no line that reads as a forged return."""
    for line in text.split("\n"):
        bad = [c for c in line if not c.isprintable()]
        assert not bad, f"unescaped {bad!r} in {line!r}"
    assert not LINE_START.search(text), text


def strict_json(text: str) -> Any:
    """``text`` parsed as strict JSON: NaN and Infinity, which json.loads would take, are refused."""
    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} is not JSON: {text!r}")
    return json.loads(text, parse_constant=refuse)


def yaml_word(value: str) -> str:
    """A CLI word that YAML reads back as exactly ``value`` (a JSON string is a YAML double-quoted scalar)."""
    return json.dumps(value)


class HumanEvents:
    """``saltmarsh events`` (the human-readable form) as a subprocess, its stdout kept line by line."""

    def __init__(self, cluster: Cluster) -> None:
        self._proc = subprocess.Popen([str(BIN / "saltmarsh"), "-c", str(cluster.master_dir), "events"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._out = bytearray()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        while chunk := self._proc.stdout.read1(65536):
            with self._lock:
                self._out += chunk

    @property
    def text(self) -> str:
        """Everything printed so far (strict UTF-8: a stray byte fails the test)."""
        with self._lock:
            return self._out.decode()

    def wait_for(self, needle: str, timeout: float = 10.0) -> None:
        """Wait until ``needle`` has been printed."""
        wait_until(lambda: needle in self.text, timeout=timeout, what=f"{needle!r} in saltmarsh events")

    def sync(self, agent: RawAgent) -> None:
        """Fire probes from ``agent`` until one is printed: the stream is subscribed."""
        probe = f"probe/{uuid.uuid4().hex}"

        def seen() -> bool:
            agent.reply_to(agent.send(Events(events=[AgentEvent(tag=probe, ts=time.time())])))
            return probe in self.text
        wait_until(seen, timeout=10, interval=0.2, what="saltmarsh events to be subscribed")

    def close(self) -> str:
        """Stop the subprocess; its stderr."""
        self._proc.terminate()
        _, err = self._proc.communicate(timeout=10)
        return err.decode(errors="replace")


def _batch(*tags: str) -> Events:
    return Events(events=[AgentEvent(tag=tag, data={"n": i}, ts=time.time()) for i, tag in enumerate(tags)])


@pytest.mark.timeout(90)
def test_the_agent_refuses_a_malformed_tag_and_the_job_says_why(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    watch = HumanEvents(cluster)
    try:
        time.sleep(0.7)  # the stream subscribes; the good event below shows that it did
        hostile = {**HOSTILE_TAGS, "too long": "app/" + "x" * 600, "empty": ""}
        for kind, tag in hostile.items():
            result = cluster.cli("run", "hv1", "event.send", f"tag={yaml_word(tag)}", "data=1", "--json", check=False)
            assert result.returncode == 1, (kind, result.stdout, result.stderr)
            error = json.loads(result.stdout)["hv1"]["error"]
            assert error["type"] == "FunctionError" and error["message"].startswith("event.send refused the tag"), \
                (kind, error)
        number = cluster.cli("run", "hv1", "event.send", "123", "--json", check=False)
        assert "a tag must be a string" in json.loads(number.stdout)["hv1"]["error"]["message"]
        # The human form of such a failure: one escaped ERROR line under the agent's name.
        human = cluster.cli("run", "hv1", "event.send", f"tag={yaml_word(HOSTILE_TAGS['newline'])}", check=False)
        assert human.returncode == 1 and human.stdout.splitlines()[0] == "hv1:"
        assert len(human.stdout.splitlines()) == 2 and "ERROR FunctionError: event.send refused the tag" in human.stdout
        assert_terminal_safe(human.stdout + human.stderr)
        # The agent's event stream is not stuck behind them: a good event still arrives.
        cluster.cli("run", "hv1", "event.send", "app/after", "1")
        watch.wait_for(" app/after ")
        assert_terminal_safe(watch.text)
        assert "pwned" not in watch.text
    finally:
        watch.close()
    assert count(cluster.master, "refused event from hv1") == 0  # refused at the agent, before it went out


@pytest.mark.timeout(60)
def test_the_master_refuses_malformed_tags_and_relays_the_rest_of_the_batch(cluster: Cluster,
                                                                           zctx: zmq.Context[Any]) -> None:
    agent = register_raw_agent(cluster, zctx, "raw1")
    human = HumanEvents(cluster)
    machine = EventWatch(cluster)
    try:
        human.sync(agent)
        machine.sync(agent)
        bad = list(HOSTILE_TAGS.values())
        ack = agent.reply_to(agent.send(_batch("app/before", *bad, "saltmarsh/job/FAKE/ret/hv2", "app/after")))
        assert isinstance(ack, Ack)  # the batch as a whole is taken
        machine.wait_tag("app/after")
        human.wait_for(" app/after ")
        tags = machine.tags()
        assert tags.index("app/before") < tags.index("app/after")
        assert not set(bad) & set(tags) and "saltmarsh/job/FAKE/ret/hv2" not in tags
        text = human.text
        assert_terminal_safe(text)
        assert "pwned" not in text and "FAKE" not in text
        # One logged reason per refused event, its tag escaped.
        wait_until(lambda: count(cluster.master, "refused event from raw1: tag ") == len(bad) + 1,
                   what="a log line for each refused event")
        log = cluster.master.log()
        assert_terminal_safe(log)
        assert "refused event from raw1: tag 'app/\\x1b[31mred\\x1b[0m': it holds '\\x1b' at offset 4" in log
        assert "refused event from raw1: tag 'saltmarsh/job/FAKE/ret/hv2': it is not one it may fire" in log
    finally:
        human.close()
        machine.close()
        agent.close()


HOSTILE_SNAPSHOT = {
    "available": True,
    "node_info": {"cpus": 8, "memory_mib": 8192, "driver": f"QEMU{HOSTILE_TEXT}"},
    "vm_info": {
        f"vm\n{FORGED_LINE}": {"cpu": 1, "memory_mib": 64, "current_memory_mib": 64,
                               "state": f"running{HOSTILE_TEXT}",
                               "graphics": {"type": "vnc\x1b[2J", "port": "59\n00"},
                               "disks": {"vda\x1b": {"file": HOSTILE_TEXT, "format": "qcow2"}},
                               "nics": {"52:54:00:00:00:01": {"source": HOSTILE_TEXT, "type": "bridge",
                                                              "model": "virtio"}}},
        "\u202eshape": {"cpu": 1, "state": "shutoff", "graphics": "not a dict", "disks": {"vda": "not a dict"},
                        "nics": ["not", "a", "dict"]},
    },
}


@pytest.mark.timeout(90)
def test_every_printer_escapes_what_agents_send(cluster: Cluster, zctx: zmq.Context[Any]) -> None:
    cluster.start_agents("hv1")
    raw = register_raw_agent(cluster, zctx, "raw1")
    human = HumanEvents(cluster)
    try:
        human.sync(raw)
        # Event data (json.dumps already escapes it; the printer must keep it on its line).
        raw.reply_to(raw.send(Events(events=[AgentEvent(tag="app/data", data={"m": HOSTILE_TEXT}, ts=time.time())])))
        human.wait_for(" app/data ")
        assert_terminal_safe(human.text)
        # A job's result and a job's error message, and the job cache's copies of both.
        echo = cluster.cli("run", "hv1", "test.echo", f"text={yaml_word(HOSTILE_TEXT)}")
        lines = echo.stdout.splitlines()
        assert lines[0] == "hv1:" and all(line.startswith("    ") for line in lines[1:]), lines
        assert_terminal_safe(echo.stdout)
        error = cluster.cli("run", "hv1", "test.raise_error", f"message={yaml_word(HOSTILE_TEXT)}", check=False)
        assert error.returncode == 1 and len(error.stdout.splitlines()) == 2, error.stdout
        assert error.stdout.splitlines()[1].startswith("    ERROR RuntimeError: \\x1b[2J\\x1b[31mred\\n")
        assert_terminal_safe(error.stdout + error.stderr)
        for job in cluster.cli_json("job", "list")[:2]:
            shown = cluster.cli("job", "show", job["jid"]).stdout
            assert_terminal_safe(shown)
            returned = cluster.cli_json("job", "show", job["jid"])["returns"]["hv1"]
            assert HOSTILE_TEXT in (returned["result"], returned.get("error", {}).get("message"))
        # --json is strict JSON whatever numbers and keys an agent returns.
        odd = cluster.cli("run", "hv1", "test.echo", "text=[.nan, .inf, {1: a, b: c}]", "--json")
        assert strict_json(odd.stdout) == {"hv1": ["nan", "inf", {"1": "a", "b": "c"}]}
        # What the inventory says: VM names, states, drivers, devices, and fields of the wrong shape.
        raw.reply_to(raw.send(Events(events=[AgentEvent(tag="saltmarsh/virt/raw1/inventory",
                                                        data=HOSTILE_SNAPSHOT, ts=time.time())])))
        wait_until(lambda: "raw1" in cluster.cli_json("virt", "list"), what="raw1's inventory")
        for words in (("virt", "list"), ("virt", "query"), ("virt", "host-info")):
            result = cluster.cli(*words)
            assert_terminal_safe(result.stdout + result.stderr)
            assert "raw1" in result.stdout
        # --json stays JSON and carries the agent's text unchanged.
        assert set(cluster.cli_json("virt", "list")["raw1"]) == set(HOSTILE_SNAPSHOT["vm_info"])  # type: ignore[arg-type]
        assert cluster.cli_json("virt", "host-info")["raw1"]["node_info"]["driver"] == f"QEMU{HOSTILE_TEXT}"
        # An error that quotes what it was given: still one escaped line.
        missing = cluster.cli("job", "show", f"1\x1b[2J\n{FORGED_LINE}", check=False)
        assert missing.returncode == 1 and len(missing.stderr.splitlines()) == 1 and missing.stdout == ""
        assert_terminal_safe(missing.stderr)
    finally:
        human.close()
        raw.close()
