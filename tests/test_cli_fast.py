"""The CLI's fast path (master/cli/fast.py) and the control stream socket it uses (master/control/stream.py).

Against a real master and agent (tests/cluster.py): the fast path prints the same stdout and stderr
and exits with the same status as the full CLI (full.py, called directly) for the same ``run`` or
``key list``;
it imports none of msgspec, pyzmq, PyYAML or argparse; the stream socket refuses a malformed or
oversized frame with a logged reason and serves on; its file is 0600.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from saltmarsh.master.cli.fast import key_list_json, parse
from saltmarsh.master.cli.full import build_parser
from saltmarsh.master.control.endpoints import MAX_CONTROL_FRAME
from saltmarsh.master.control.messages import ControlReply
from saltmarsh.master.control.stream import frame as stream_frame
from saltmarsh.protocol.bounds import DEFAULT_RUN_TIMEOUT

from .cluster import Cluster, wait_until

# Runs one command the way the ``saltmarsh`` script does (FULL: straight into the full CLI), then
# reports its exit status and every module it imported on the last line of stderr.
PROBE = """
import json, sys
from saltmarsh.master.cli{module} import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
sys.stdout.flush()
print(json.dumps({{"status": status, "modules": sorted(sys.modules)}}), file=sys.stderr)
"""
HEAVY = {"msgspec", "zmq", "yaml", "argparse", "asyncio", "saltmarsh.master.cli.full",
         "saltmarsh.master.control.client", "saltmarsh.master.config"}
JID = re.compile(r"\b[0-9]{14,}[0-9a-z_-]*\b")  # a jid differs between two runs of a command


def saltmarsh(cluster: Cluster, *argv: str, full: bool = False) -> tuple[int, str, str, set[str]]:
    """Run ``saltmarsh -c DIR ARGV`` (``full``: the full CLI alone): status, stdout, stderr, imported modules."""
    code = PROBE.format(module=".full" if full else "")
    result = subprocess.run([sys.executable, "-c", code, "-c", str(cluster.master_dir), *argv],
                            capture_output=True, text=True, timeout=60)
    *lines, report = result.stderr.splitlines()
    found = json.loads(report)
    stderr = "".join(line + "\n" for line in lines)
    return int(found["status"] or 0), result.stdout, stderr, set(found["modules"])


def same_jids(text: str) -> str:
    """``text`` with every jid replaced, so two runs of one command compare."""
    return JID.sub("JID", text)


@pytest.mark.timeout(180)
def test_the_fast_path_prints_and_exits_as_the_full_cli_does(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    commands = [
        ["run", "hv1", "test.ping"],
        ["run", "hv1", "test.ping", "--json"],
        ["run", "--json", "--timeout", "5", "hv1", "test.echo", "text=é\x1b[31m"],
        ["run", "hv1", "test.echo", "[1, {a: 2}]"],
        ["run", "hv1", "test.raise_error"],
        ["run", "hv1", "test.raise_error", "--json"],
        ["run", "hv1", "no.such_function"],
        ["run", "nosuch", "test.ping"],
        ["run", "nosuch", "test.ping", "--json"],
        ["run", "a" * 300, "test.ping", "--json"],  # refused by the master: its code and line, both ways
    ]
    for argv in commands:
        status, out, err, modules = saltmarsh(cluster, *argv)
        # The fast path took it (PyYAML only for an argument that needs it to be read).
        heavy = HEAVY - {"yaml"} if argv[-1].startswith(("text=", "[")) else HEAVY
        assert not modules & heavy, (argv, sorted(modules & heavy))
        full_status, full_out, full_err, full_modules = saltmarsh(cluster, *argv, full=True)
        assert "zmq" in full_modules
        assert (status, same_jids(out), same_jids(err)) == (full_status, same_jids(full_out), same_jids(full_err)), argv
    for argv in (["key", "list"], ["key", "list", "--json"]):
        status, out, err, modules = saltmarsh(cluster, *argv)
        assert not modules & HEAVY, (argv, sorted(modules & HEAVY))
        assert (status, out, err) == saltmarsh(cluster, *argv, full=True)[:3], argv
        assert status == 0 and "hv1" in out
    assert saltmarsh(cluster, "run", "hv1", "test.ping")[:2] == (0, "hv1:\n    true\n")
    assert saltmarsh(cluster, "run", "hv1", "test.raise_error")[0] == 1
    # What the fast path does not take, the full CLI runs, as before.
    status, out, _err, modules = saltmarsh(cluster, "run", "-L", "hv1", "test.ping")
    assert (status, out) == (0, "hv1:\n    true\n") and "zmq" in modules


@pytest.mark.timeout(60)
def test_a_silent_agent_is_named_the_same_way(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    cluster.agents["hv1"].pause()
    try:
        argv = ["run", "--timeout", "1", "hv1", "test.ping"]
        fast, full = saltmarsh(cluster, *argv), saltmarsh(cluster, *argv, full=True)
    finally:
        cluster.agents["hv1"].resume()
    # The reason is the master's and changes as it notices the agent is gone (up, then offline since …).
    assert (fast[0], fast[1]) == (full[0], full[1]) == (1, "")
    for stderr in (fast[2], full[2]):
        assert re.fullmatch(r"hv1: did not answer job JID: [^\n]+\n", same_jids(stderr)), stderr


def frame(message: Any) -> bytes:
    """One stream-socket frame."""
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return len(body).to_bytes(4, "big") + body


def read_frame(connection: socket.socket) -> Any:
    """The next frame's JSON; None if the master closed the connection."""
    data = b""
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        chunk = connection.recv(65536)
        if not chunk:
            return None
        data += chunk
    return json.loads(data[4:])


def stream_socket(cluster: Cluster) -> Path:
    """The master's control stream socket."""
    return cluster.control_socket.parent / "master.stream"


@pytest.mark.timeout(60)
def test_the_stream_socket_refuses_bad_frames_with_a_logged_reason_and_serves_on(cluster: Cluster) -> None:
    path = stream_socket(cluster)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.connect(str(path))
        connection.sendall(frame(b"\xff not json"))
        connection.sendall(frame({"id": 7, "cmd": 5}))  # readable id, wrong schema: answered
        reply = read_frame(connection)
        assert (reply["id"], reply["ok"], reply["code"]) == (7, False, "refused")
        connection.sendall(frame({"id": 8, "cmd": "no.such_command", "args": {}}))
        reply = read_frame(connection)
        assert (reply["id"], reply["ok"], reply["code"]) == (8, False, "invalid")
        connection.sendall(frame({"id": 9, "cmd": "key.list", "args": {}}))  # the same connection serves on
        reply = read_frame(connection)
        assert reply["id"] == 9 and reply["ok"], reply
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.connect(str(path))
        connection.sendall((MAX_CONTROL_FRAME + 1).to_bytes(4, "big") + b"x" * 1000)
        assert read_frame(connection) is None  # closed unread
    wait_until(lambda: cluster.master.log().count("control stream: rejected request") >= 3,
               what="the refusals to be logged")
    assert "more than the" in cluster.master.log()
    assert cluster.master.alive()
    assert cluster.cli("key", "list").returncode == 0


@pytest.mark.timeout(30)
def test_what_the_fast_path_takes_it_reads_as_the_parser_does() -> None:
    taken = [["run", "hv1", "test.ping"], ["-c", "/tmp", "run", "--json", "hv1", "f", "a", "b=2"],
             ["--config-dir", "/etc", "run", "hv1", "f", "--timeout", "2.5", "--json"],
             ["run", "--timeout", "1", "--timeout", "3", "hv1", "f", "x y"]]
    for argv in taken:
        parsed = parse(argv)
        assert parsed is not None, argv
        args = build_parser("run").parse_args(argv)
        config_dir, as_json, timeout, words = parsed
        assert (config_dir, as_json, words) == (args.config_dir, args.json, [args.target, args.function,
                                                                             *args.arguments])
        assert timeout == (args.timeout or DEFAULT_RUN_TIMEOUT)
    left = [["run", "hv1"], ["run", "-L", "a,b", "f"], ["run", "hv1", "--json", "f"], ["run", "hv1", "f", "-1"],
            ["run", "hv1", "f", "--timeout", "nan"], ["run", "hv1", "f", "--timeout=1"], ["key", "list"],
            ["run", "--help"], ["-c", "run", "hv1", "f"], ["run", "hv1", "f", "--timeout"], ["run", "hv1", "f", "--"]]
    for argv in left:
        assert parse(argv) is None, argv
    lists = (["key", "list"], ["-c", "/x", "key", "list", "--json"], ["key", "list", "-h"], ["key", "accept"],
             ["-c", "key", "list"])
    assert [key_list_json(argv) for argv in lists] == [False, True, None, None, None]


@pytest.mark.timeout(10)
def test_a_reply_json_cannot_hold_is_sent_as_an_internal_error() -> None:
    body = stream_frame(ControlReply(4, result={(1, 2): 1}))
    reply = json.loads(body[4:])
    assert int.from_bytes(body[:4], "big") == len(body) - 4
    assert (reply["id"], reply["ok"], reply["code"]) == (4, False, "internal")
    assert json.loads(stream_frame(ControlReply(5, result={"x": math.inf}))[4:])["result"] == {"x": math.inf}
