"""CLI start-up: each command imports only what it uses, and the shortcuts taken for speed read as PyYAML does.

The import checks run the real ``saltmarsh`` entry point in a fresh interpreter (``run`` against a
real master and agent on loopback, tests/cluster.py) and look at ``sys.modules`` when it is done:
what was never imported cannot have cost start-up time, however loaded the machine is. Speed itself
is measured by ``python -m bench.cli_startup``, never asserted here.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
import yaml

from saltmarsh.master.cli.full import build_parser, command_word
from saltmarsh.master.cli.output import block, parse_value
from saltmarsh.protocol.configfile import read_simple_yaml

from .cluster import Cluster

PROBE = """
import json, sys
from saltmarsh.master.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:  # --help and usage errors end in the parser
    status = exc.code
sys.stdout.flush()
print(json.dumps({"status": status, "modules": sorted(sys.modules)}), file=sys.stderr)
"""
# What no command that only talks to the master needs: the daemons' event loop, the YAML library
# (master.yaml as the tests write it is read without it), logging, the event bus.
NEVER = {"asyncio", "zmq.asyncio", "yaml", "logging", "saltmarsh.master.events.bus", "saltmarsh.master.server"}
# What building the parser needs none of.
NOT_FOR_PARSING = NEVER | {"zmq", "msgspec", "saltmarsh.master.control.client", "saltmarsh.master.config",
                           "saltmarsh.protocol.messages", "datetime"}


def modules_after(*argv: str) -> tuple[int, set[str], str]:
    """Run ``saltmarsh ARGV`` in a fresh interpreter: its exit status, every module it imported, its stdout."""
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return int(report["status"] or 0), set(report["modules"]), result.stdout


@pytest.mark.timeout(60)
def test_help_and_usage_errors_import_no_client_schema_or_yaml() -> None:
    for argv, status in ((["--help"], 0), (["run", "--help"], 0), (["virt", "init"], 2), (["agent", "list", "-x"], 2)):
        code, modules, _ = modules_after(*argv)
        assert code == status, argv
        assert not modules & NOT_FOR_PARSING, (argv, sorted(modules & NOT_FOR_PARSING))
    # An argument YAML cannot build is a usage error, found before anything reaches for the master.
    code, modules, _ = modules_after("run", "hv1", "test.echo", "9" * 5000)
    assert code == 2 and not modules & (NEVER | {"zmq", "saltmarsh.master.control.client"})


@pytest.mark.timeout(90)
def test_a_ping_imports_no_client_schema_event_loop_yaml_or_logging(cluster: Cluster) -> None:
    cluster.start_agents("hv1")
    code, modules, stdout = modules_after("-c", str(cluster.master_dir), "run", "hv1", "test.ping")
    assert (code, stdout) == (0, "hv1:\n    true\n")
    # The fast path (master/cli/fast.py) takes it: the stdlib, and the few small modules of its own.
    assert not modules & NOT_FOR_PARSING, sorted(modules & NOT_FOR_PARSING)
    assert "saltmarsh.master.cli.fast" in modules and "argparse" not in modules
    ours = {name for name in modules if name.startswith("saltmarsh.")}
    assert len(ours) <= 16, sorted(ours)  # each is compiled from source at every start here
    # A command it does not take goes to the full CLI: only the family of the command typed is imported.
    code, modules, stdout = modules_after("-c", str(cluster.master_dir), "run", "-L", "hv1", "test.ping")
    assert (code, stdout) == (0, "hv1:\n    true\n")
    assert {"zmq", "msgspec", "saltmarsh.master.control.client"} <= modules
    assert not modules & NEVER, sorted(modules & NEVER)
    others = {f"saltmarsh.master.cli.{family}" for family in ("virt", "images", "pki", "keys", "agents", "events")}
    assert "saltmarsh.master.cli.jobs" in modules and not modules & others, sorted(modules & others)
    assert not modules & {"saltmarsh.master.images.build", "saltmarsh.pki.ca", "cryptography"}
    code, modules, stdout = modules_after("-c", str(cluster.master_dir), "key", "list")
    assert code == 0 and "hv1" in stdout and not modules & NEVER


@pytest.mark.timeout(30)
def test_the_parser_built_for_one_command_parses_it_as_the_whole_tree_does() -> None:
    whole = build_parser()
    for argv in (["run", "-b", "50%", "--fail-fast", "hv*", "test.sleep", "1", "x=2"], ["-c", "/tmp", "key", "list"],
                 ["--config-dir", "/etc", "agent", "show", "hv1", "--json"], ["job", "running", "-L", "a,b", "--json"],
                 ["host", "maintenance", "on", "hv1"], ["virt", "list"]):
        word = command_word(argv)
        assert word == next(w for w in argv if w in ("run", "key", "agent", "job", "host", "virt"))
        one, every = vars(build_parser(word).parse_args(argv)), vars(whole.parse_args(argv))
        assert one == every, argv
    assert command_word(["-c", "run", "--help"]) is None  # "run" is -c's value here


@pytest.mark.timeout(10)
def test_simple_config_files_read_as_pyyaml_reads_them() -> None:
    values = ["1", "0", "-7", "017", "1.5", "-0.25", "1.", ".5", "1e3", "true", "false", "True", "yes", "Off", "y",
              "null", "~", "info", "/var/lib/x", "state", "127.0.0.1", "1.2.3", "2001-12-14", "1:20", "0x1f",
              "1_000", "'a b'", "''", "'it''s'", '"x"', "x # c", "[1, 2]", "{a: 1}", ".inf", "+1", "a-b.c", "&a x"]
    taken = 0
    for value in values:
        text = f"# a comment\n\nroot_dir: {value}\nport: 4606\n"
        simple = read_simple_yaml(text)
        if simple is None:
            continue  # left to PyYAML: nothing to compare
        taken += 1
        full = yaml.safe_load(text)
        assert simple == full and all(type(simple[k]) is type(full[k]) for k in full), value
    assert taken >= 12  # the shortcut is taken for the values a config is made of
    assert read_simple_yaml(yaml.safe_dump({"interface": "127.0.0.1", "publish_port": 4605, "root_dir": "state",
                                            "heartbeat_seconds": 1.0, "log_level": "debug", "auto_accept": False}))
    assert read_simple_yaml("pki:\n  ca_days: 10\n") is None and read_simple_yaml("a: 1 # why\n") is None


@pytest.mark.timeout(10)
def test_command_line_values_and_scalar_results_read_and_print_as_yaml_does() -> None:
    words = ["0", "1", "-1", "017", "10", "abc", "hv1", "True", "YES", "No", "on", "null", "NULL", "n", "x-y", "a/b",
             "é", "1.5", "1e3", "0x10", "~", "test.ping", "nan", ".inf", "2001-12-14", "1_000", "a:b", "a: b", ""]
    for word in words:
        ours, theirs = parse_value(word), yaml.safe_load(word)
        assert ours == theirs and type(ours) is type(theirs), word
    for data in (True, False, None, 0, 7, -3, 10**30):
        text = yaml.safe_dump(data, default_flow_style=False, sort_keys=True, allow_unicode=True).rstrip()
        assert block(data) == "    " + text.removesuffix("\n..."), data
    assert list(itertools.islice(block({"a": [1, "x"]}).splitlines(), 3)) == ["    a:", "    - 1", "    - x"]
