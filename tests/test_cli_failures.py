"""Every failure of the CLI says so, in one line on stderr, with exit 1 or 2, never a traceback.

Real daemons throughout: the master dying under a waiting ``run``, requests too large for
the control socket, numbers that are no numbers, a dry run with nowhere to go, list targets
naming agents that do not exist, agents the master knows are down, and a socket the user may
not open. The last test walks the CLI's own parser, so a new command is covered by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq

from saltmarsh.master.cli import main
from saltmarsh.master.cli.arguments import labels as label_type
from saltmarsh.master.cli.full import build_parser
from saltmarsh.master.control.client import MasterClient
from saltmarsh.master.control.messages import MAX_CONTROL_FRAME
from saltmarsh.master.errors import CommandError
from saltmarsh.protocol.codec import decode, encode

from .cluster import BIN, Cluster, venv_reachable_by_others, wait_until
from .wire import count

JID = re.compile(r"[0-9]{20,26}")


def one_line_failure(result: subprocess.CompletedProcess[str], codes: tuple[int, ...] = (1, 2)) -> str:
    """The one stderr line of a failed command (asserting there is exactly one, and no traceback)."""
    assert result.returncode in codes, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---- the master goes away under a waiting client -------------------------------------------------


@pytest.mark.timeout(90)
def test_run_says_the_master_went_away_and_where_the_returns_will_be(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    runner = subprocess.Popen([str(BIN / "saltmarsh"), "-c", str(cluster.master_dir), "run", "hv1", "test.sleep",
                               "3", "--timeout", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: "test.sleep" in cluster.agents["hv1"].log(), what="the agent to start the job")
    killed = time.monotonic()
    cluster.master.stop(signal.SIGKILL)
    out, err = runner.communicate(timeout=30)
    assert time.monotonic() - killed < 10, "the CLI waited out its timeout"
    result = subprocess.CompletedProcess(runner.args, runner.returncode, out, err)
    line = one_line_failure(result, (1,))
    assert line.startswith("saltmarsh: the master closed the control connection (it stopped or crashed) while job ")
    jid = JID.search(line)
    assert jid and f"`saltmarsh job show {jid.group()}` holds them" in line, line
    # What the line promises: the master comes back and the agent's spooled return lands.
    cluster.start_master()
    wait_until(lambda: "hv1" in cluster.cli_json("job", "show", jid.group())["returns"], timeout=30,
               what="the return in the job cache")


@pytest.mark.timeout(60)
def test_an_event_stream_says_the_master_went_away_and_a_long_lived_client_carries_on(cluster: Cluster) -> None:
    stream = subprocess.Popen([str(BIN / "saltmarsh"), "-c", str(cluster.master_dir), "events"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with MasterClient(cluster.control_socket) as client:
        before = client.call("master.ping")["fingerprint"]
        time.sleep(1.0)  # subscribed (a stream with no events has nothing else to show)
        cluster.master.stop()
        out, err = stream.communicate(timeout=20)
        line = one_line_failure(subprocess.CompletedProcess(stream.args, stream.returncode, out, err), (1,))
        assert line == "saltmarsh: the master closed the control connection (it stopped or crashed)"
        # Only what was asked of the master that went away is lost: the same client asks the next one.
        cluster.start_master()
        assert client.call("master.ping")["fingerprint"] == before


# ---- requests too large for the control socket -----------------------------------------------------


@pytest.mark.timeout(60)
def test_an_oversized_request_is_refused_with_its_reason_on_both_sides(cluster: Cluster,
                                                                        zctx: zmq.Context[Any]) -> None:
    # The CLI refuses before sending: a word may be at most 128 KiB, so ten make the request.
    words = ["x" * 120_000] * 10
    started = time.monotonic()
    result = cluster.cli("run", "hv1", "test.echo", *words, check=False)
    line = one_line_failure(result, (1,))
    assert time.monotonic() - started < 8
    assert re.fullmatch(rf"saltmarsh: cannot send run: the request is \d+ bytes, more than the {MAX_CONTROL_FRAME} "
                        "the control socket takes", line), line
    # Another client that sends one anyway gets the reason at once, and the master logs it.
    client = zctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(f"ipc://{cluster.control_socket}")
    client.send(encode({"id": 7, "cmd": "run", "args": {"fun": "test.echo", "args": ["y" * (MAX_CONTROL_FRAME + 1)]}}))
    assert client.poll(5000), "no answer to an oversized request"
    reply = decode(client.recv(), dict[str, Any])
    assert reply["id"] == 7 and reply["ok"] is False
    assert reply["error"].startswith("refused: the request is ")
    assert f"more than the {MAX_CONTROL_FRAME}" in reply["error"]
    wait_until(lambda: count(cluster.master, "control: rejected request: the request is") == 1,
               what="the master's log line")
    # A malformed request is answered too, when its id can be read.
    client.send(encode({"id": 8, "cmd": 5}))
    assert client.poll(5000), "no answer to a malformed request"
    reply = decode(client.recv(), dict[str, Any])
    assert reply["id"] == 8 and reply["ok"] is False and reply["error"].startswith("refused: control request")
    client.close()
    cluster.cli("key", "list")  # and the master serves on


# ---- numbers, labels, sizes ---------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_numbers_that_are_no_numbers_are_refused_in_one_line(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    assert cluster.cli_json("run", "hv1", "test.ping", "--timeout", "1e9") == {"hv1": True}  # the longest wait works
    for bad in ("nan", "inf", "-inf", "-1", "0", "1e400", "1e10", "ten"):
        for words in (("run", "hv1", "test.ping"), ("virt", "start", "vm1"), ("virt", "init", "vm1", "1", "64"),
                      ("virt", "migrate", "vm1", "hv1"), ("events",)):
            opt = "--idle-timeout" if words == ("events",) else "--timeout"
            line = one_line_failure(cluster.cli(*words, f"{opt}={bad}", check=False), (2,))
            assert f"argument {opt}: {bad!r} is not a number of seconds above 0 and at most 1000000000" in line
    for bad in ("-5", "0", "nan", "1e12"):
        line = one_line_failure(cluster.cli("key", "token", "new1", f"--ttl={bad}", check=False), (2,))
        assert f"argument --ttl: {bad!r} is not a number of seconds above 0 and at most 2592000" in line
    line = one_line_failure(cluster.cli("virt", "init", "vmA", "1", "512", "--label", "zone", check=False), (2,))
    assert "argument --label: label 'zone' is not key=value" in line
    for cpus, memory in (("0", "512"), ("-1", "512"), ("1", "0"), ("1", "0G")):
        one_line_failure(cluster.cli("virt", "init", "vmA", cpus, memory, "--dry-run", check=False), (2,))
    for words in (("job", "list", "--limit", "0"), ("events", "--count", "-1"), ("virt", "migrate", "a", "b",
                                                                                  "--bandwidth", "-1")):
        assert "is less than" in one_line_failure(cluster.cli(*words, check=False), (2,))
    # The master refuses the same on its own, in its own words, for any client.
    with MasterClient(cluster.control_socket) as client:
        for ttl in (-5.0, 0.0, math.nan, math.inf, 1e12):
            with pytest.raises(CommandError, match=r"^a join token's ttl must be more than 0 and at most 2592000 s"):
                client.call("key.token", id="new1", ttl=ttl)
        assert client.call("key.token", id="new1", ttl=60.0)["expires"] > time.time()
        for cpus, memory in ((0, 512), (-3, 512), (10**6, 512)):
            with pytest.raises(CommandError, match=rf"^a VM needs 1 to \d+ CPUs, not {cpus}$"):
                client.call("virt.init", name="vmA", cpus=cpus, memory_mib=memory, dry_run=True)
        with pytest.raises(CommandError, match=r"^a VM needs 1 to \d+ MiB of memory, not 0$"):
            client.call("virt.init", name="vmA", cpus=1, memory_mib=0, dry_run=True)


@pytest.mark.timeout(60)
def test_a_dry_run_with_nowhere_to_go_exits_1(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agents("hv1", virt={"vm_dir": str(tmp_path / "vms")})
    wait_until(lambda: cluster.cli_json("virt", "host-info").get("hv1", {}).get("libvirt"), what="hv1's inventory")
    fits = cluster.cli("virt", "init", "vmA", "1", "64", "--dry-run")
    assert fits.stdout.splitlines()[-1] == "    choice: hv1"
    for extra in ((), ("--json",)):
        result = cluster.cli("virt", "init", "vmA", "1", "999999", "--dry-run", *extra, check=False)
        assert one_line_failure(result, (1,)) == "saltmarsh: no hypervisor can hold vmA"
        shown = json.loads(result.stdout)["choice"] if extra else result.stdout.splitlines()[-1]
        assert shown in (None, "    choice: none")
    result = cluster.cli("virt", "init", "vmA", "1", "64", "--label", "zone=nowhere", "--dry-run", check=False)
    assert one_line_failure(result, (1,)) == "saltmarsh: no hypervisor can hold vmA"


# ---- targets and agents that will not answer ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_list_target_names_each_agent_it_cannot_reach(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    cluster.start_agent("waiting")  # its key stays pending
    wait_until(lambda: "waiting" in cluster.pending(), what="a pending key")
    result = cluster.cli("run", "-L", "hv1,hv9,waiting", "test.ping", check=False)
    assert result.returncode == 1 and result.stdout.splitlines() == ["hv1:", "    true"]
    lines = sorted(result.stderr.splitlines())
    assert len(lines) == 2 and "Traceback" not in result.stderr
    assert re.fullmatch(r"hv9: not sent job \d+: no such agent \(no key by that id\)", lines[0]), lines
    assert re.fullmatch(r"waiting: not sent job \d+: key not accepted \(it is pending\)", lines[1]), lines
    shown = json.loads(cluster.cli("run", "-L", "hv1,hv9,waiting", "test.ping", "--json", check=False).stdout)
    assert shown == {"hv1": True, "_missing": {"hv9": "no such agent (no key by that id)",
                                               "waiting": "key not accepted (it is pending)"}}


@pytest.mark.timeout(90)
def test_offline_agents_are_named_at_once_and_not_waited_for(cluster: Cluster) -> None:
    cluster.start_agents("hv1", "hv2")
    assert count(cluster.master, "agent hv1 is up (first contact)") == 1
    cluster.agents["hv2"].stop()
    wait_until(lambda: count(cluster.master, "agent hv2 is down: no heartbeat (last seen ") == 1, timeout=15,
               what="the master to log hv2 down")
    started = time.monotonic()
    result = cluster.cli("run", "*", "test.ping", "--timeout", "60", check=False)
    assert time.monotonic() - started < 10, "run waited for an agent the master knew was down"
    assert result.returncode == 1 and result.stdout.splitlines() == ["hv1:", "    true"]
    assert re.fullmatch(r"hv2: did not answer job \d+: offline since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\n",
                        result.stderr), result.stderr
    shown = cluster.cli("run", "*", "test.ping", "--timeout", "60", "--json", check=False)
    missing = json.loads(shown.stdout)
    assert missing["hv1"] is True and missing["_missing"]["hv2"].startswith("offline since ")
    # Back again: one line for that too, and it is waited for again.
    cluster.start_agent("hv2")
    cluster.wait_answering("hv2")
    assert count(cluster.master, "agent hv2 is up (was offline since ") == 1
    assert cluster.cli_json("run", "*", "test.ping") == {"hv1": True, "hv2": True}


# ---- a socket the user cannot reach ---------------------------------------------------------------------


@contextlib.contextmanager
def readable_dir() -> Iterator[Path]:
    """A fresh directory anyone may read (pytest's own tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="saltmarsh-cli-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _config_with_socket_at(config_dir: Path, root_dir: Path) -> Path:
    (config_dir / "master.yaml").write_text(yaml.safe_dump({"root_dir": str(root_dir)}))
    return config_dir


def _cli(config_dir: Path, *words: str, user: str = "") -> subprocess.CompletedProcess[str]:
    as_user = ["setpriv", "--reuid", user, "--regid", "nogroup", "--clear-groups", "--"] if user else []
    return subprocess.run([*as_user, str(BIN / "saltmarsh"), "-c", str(config_dir), *words],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.timeout(60)
def test_a_control_socket_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "control" / "master.sock").mkdir(parents=True)  # a directory where the socket should be
    line = one_line_failure(_cli(_config_with_socket_at(tmp_path, root), "key", "list"), (1,))
    assert line == f"saltmarsh: {root}/control/master.sock is not a socket, so no master listens there " \
                   "(is root_dir right?)"
    shutil.rmtree(root / "control")
    (root / "control").mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(root / "control" / "master.sock"))  # bound, never listening: a crashed master's file
    stale.close()
    line = one_line_failure(_cli(tmp_path, "job", "list"), (1,))
    assert line.startswith("saltmarsh: nothing listens on the control socket")
    assert line.endswith("(is saltmarsh-master running?)")
    (tmp_path / "master.yaml").write_text("root_dir: [not, a, path]\n")
    line = one_line_failure(_cli(tmp_path, "key", "list"), (1,))
    assert line.startswith(f"saltmarsh: {tmp_path}/master.yaml")


def _leaf_argv(words: str) -> list[str]:
    """Each leaf command with ordinary values for its positionals."""
    leaf = commands()[words]
    required = [part for a in valued_options(leaf) if a.required for part in (a.option_strings[-1], benign(a))]
    return [*words.split(), *(benign(a) for a in positionals(leaf) if a.nargs != "*"), *required]


@pytest.mark.timeout(100)
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_every_command_run_by_a_user_who_may_not_open_the_socket_is_one_line(cluster: Cluster) -> None:
    with venv_reachable_by_others(), readable_dir() as config_dir:
        _config_with_socket_at(config_dir, cluster.master_dir / "state")
        for words in sorted(commands()):
            argv = _leaf_argv(words) + (["--idle-timeout", "1"] if words == "events" else [])
            result = _cli(config_dir, *argv, user="nobody")
            line = one_line_failure(result, (1,))
            # These need no master: they fail on their own files (the CA's, the image roots').
            if words not in ("pki init", "image build", "image list"):
                assert line == f"saltmarsh: permission denied reaching the control socket {cluster.control_socket}: " \
                               "run saltmarsh as the master's user (or root)", (words, line)
        # The master's own config dir is private too: whatever that makes of it, still one line.
        one_line_failure(_cli(cluster.master_dir, "key", "list", user="nobody"), (1,))
    cluster.cli("key", "list")  # root still gets in


# ---- every command, hostile arguments, from the parser itself ---------------------------------------------


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every leaf command of the CLI, by its words, walked from build_parser()."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found[" ".join(words)] = parser
        for action in subs:
            for name, child in action.choices.items():
                walk(child, [*words, name])

    walk(build_parser(), [])
    return found


def positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The positional arguments of a leaf command."""
    return [a for a in parser._actions if not a.option_strings]


def valued_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options of a leaf command that take a value (not flags, not --help)."""
    return [a for a in parser._actions if a.option_strings and a.nargs != 0 and not isinstance(a, argparse._HelpAction)]


# Ordinary values for positionals, by their dest: each command is run with these and one hostile value.
BENIGN = {"target": "hv1", "function": "test.ping", "jid": "20000101000000000000", "id": "hv1", "name": "vm1",
          "cpus": "1", "memory": "64", "state": "on", "host": "hv1", "scope": "agents:read"}
# Options a command needs to end by itself (an event stream runs until told otherwise).
ENDS = {"events": ["--idle-timeout", "0.3"]}
NUMBER_HOSTILE = ["nan", "inf", "-inf", "-5", "1e400", "9" * 30, "", "\x1b[31m\n1"]
TEXT_HOSTILE = ["", "\x1b[2J\x1b[31m\n20:00:00.000 saltmarsh/job/FAKE/ret/hv2 {}\x07", "x" * 3000]
LABEL_HOSTILE = ["zone", "=a", "", "\x1b=\n"]
# A hostile value that is a legitimate one for its slot: an empty GLOB subscribes to every event.
LEGITIMATE = {("events", "pattern", "")}


def benign(action: argparse.Action) -> str:
    """An ordinary value for a positional: by its dest, else its first choice, else a plain word."""
    if action.dest in BENIGN:
        return BENIGN[action.dest]
    return str(next(iter(action.choices))) if action.choices else "x"


def _kind(action: argparse.Action) -> list[str]:
    """The hostile values for an argument, by what its parser expects."""
    if action.choices is not None:
        return ["nan", "", "\x1b\n"]
    if action.type is label_type:
        return LABEL_HOSTILE
    if action.type is None or action.type is str:
        return TEXT_HOSTILE
    return NUMBER_HOSTILE


def hostile_cases() -> Iterator[tuple[list[str], str]]:
    """(argv, what) for every leaf command: each argument in turn given each hostile value."""
    for words, leaf in sorted(commands().items()):
        args = positionals(leaf)
        for slot in args + valued_options(leaf):
            if slot.nargs == "*":
                continue  # a function's own arguments: any value is data, for the function to judge
            for value in _kind(slot):
                if (words, slot.dest, value) in LEGITIMATE:
                    continue
                argv = words.split()
                for a in args:
                    if a is slot:
                        argv.append(value)
                    elif a.nargs not in ("?", "*"):
                        argv.append(benign(a))
                if slot.option_strings:
                    argv += [slot.option_strings[-1], value]
                ends = ENDS.get(words, [])
                if ends and ends[0] in slot.option_strings:
                    ends = []  # the slot under test is the very option that would end it
                yield argv + ends, f"{words} {slot.dest}={value!r}"


def _run_in_process(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) as the ``saltmarsh`` script runs it; an exception escaping it is the traceback a user would see."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception:  # collected, so that one run names every command that fails this way
            err.write("Traceback: " + traceback.format_exc().strip().splitlines()[-1])
            code = -1
    return code, out.getvalue(), err.getvalue()


@pytest.mark.timeout(110)
def test_every_command_with_hostile_arguments_fails_in_one_line(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agents("hv1", virt={"vm_dir": str(tmp_path / "vms")})
    base = ["-c", str(cluster.master_dir)]
    cases = list(hostile_cases())
    assert len({what.split(" ")[0] for _, what in cases}) >= 5 and len(cases) > 150, "the walk found the commands"
    extra = [(["run", "-l", "zone", "test.ping"], "label target without ="), (["run", "-L", ",", "test.ping"],
             "empty list target"), (["run", "-L", "-l", "hv1", "test.ping"], "-L with -l")]
    failures = []
    for argv, what in [*cases, *extra]:
        code, out, err = _run_in_process(base + argv)
        lines = err.splitlines()
        if code not in (1, 2) or len(lines) != 1 or any(not c.isprintable() for c in lines[0]):
            failures.append(f"{what}: exit {code}, stderr {err!r}, stdout {out[-200:]!r}")
    assert not failures, "\n".join(failures)
    # A config file that is no config: every command, pki init included, is one line too.
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "master.yaml").write_text("root_dir: [1, 2]\nno_such_key: 1\n")
    for words in sorted(commands()):
        code, _, err = _run_in_process(["-c", str(tmp_path / "bad"), *_leaf_argv(words)])
        assert code == 1 and len(err.splitlines()) == 1 and str(tmp_path / "bad") in err, (words, err)
