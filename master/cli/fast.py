"""The CLI's fast path: ``saltmarsh [-c DIR] run TARGET FUN [ARG...] [--json] [--timeout S]`` (and ``key list
[--json]``) on the stdlib alone.

Why: a ``run`` is the command typed most, and most of its start-up was imports: pyzmq, msgspec
and the full config schema cost more than the rest of the command together (issue 12; see
bench/cli_startup.py). This path imports none of them, nor argparse or PyYAML (unless an
argument needs YAML to read): it reads ``root_dir`` from a flat master.yaml with the stdlib
reader the full config parse uses too (protocol/configtext.py), talks to the master over its
control stream socket (JSON frames; master/control/stream.py), and prints through the full CLI's
own formatter (jobview.py). What a job's outcome means is the service layer's rule in both cases
(master/service/outcome.py), so both paths print the same and exit with the same status.

It takes only what it is sure to read as the full parser does; anything else returns None and
the full CLI (full.py) runs the command: another command, any other option (-L, -l, -b, --async,
-h, ``--timeout=S``), options between the positionals, a word starting with ``-``, a TARGET that
is not a plain agent id (globs, lists), an argument that is not plain JSON data, a master.yaml
that is absent or not flat, and a stream socket it cannot connect to (the full CLI says why, in
its words). Once the request is sent, the command is this path's to finish.

What it does not check: the rest of master.yaml. A file the master would refuse (an unknown key)
is refused by the full CLI, while this path only needs ``root_dir`` from it.
"""

from __future__ import annotations

import json
import math
import re
import socket
import time
from pathlib import Path

from saltmarsh.protocol.bounds import DEFAULT_CONFIG_DIR, DEFAULT_RUN_TIMEOUT, MAX_INTERVAL, RETURN_GRACE_SECONDS
from saltmarsh.protocol.configtext import read_simple_yaml, resolve_dir

from ..control.endpoints import (
    DEFAULT_REPLY_TIMEOUT,
    DEFAULT_ROOT_DIR,
    MASTER_GONE,
    MAX_CONTROL_FRAME,
    STREAM_SOCKET,
    control_dir,
)
from ..service.outcome import Outcome
from .jobview import print_finished, print_keys, report_at_once, split_arguments
from .output import fail, print_json

TYPE_CHECKING = False  # typing only for the type checker, as in output.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

CONFIG_FILE = "master.yaml"
# A TARGET the full CLI reads as one agent id (no glob character; pki/ids.py's safe names).
PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
INT64 = 2**63
RUN, OUTCOME, END = 1, 2, 3  # request ids: the run, its job.outcome, and the end of its stream


class Gone(Exception):
    """The master closed the connection, or did not answer in time (the message says which)."""


class Refusal(Exception):
    """The master refused a request: its stable ``code`` and its one line."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def run_fast(words: list[str]) -> int | None:
    """Run ``words`` if this path takes them (``run``, ``key list``); the exit status, or None for full.py."""
    as_json = key_list_json(words)
    if as_json is not None:
        config = _config_dir(words)
        return _key_list(Path(DEFAULT_CONFIG_DIR) if config is None else config[0], as_json)
    return _run_job(words)


def _run_job(words: list[str]) -> int | None:
    parsed = parse(words)
    if parsed is None:
        return None
    config_dir, as_json, timeout, positionals = parsed
    target, fun, rest = positionals[0], positionals[1], positionals[2:]
    if not PLAIN_ID.fullmatch(target):
        return None
    try:
        fun_args, fun_kwargs = split_arguments(rest)
    except ValueError:
        return None  # the full CLI says which argument, as a usage error
    if not all(_plain(value) for value in (*fun_args, *fun_kwargs.values())):
        return None
    request = {"fun": fun, "target": {"kind": "id", "ids": [target]}, "args": fun_args, "kwargs": fun_kwargs,
               "timeout": timeout, "wait": True}
    body = _frame({"id": RUN, "cmd": "run", "args": request})
    if body is None:
        return None
    return _session(config_dir, lambda replies: _run(replies, body, timeout, as_json))


def _key_list(config_dir: Path, as_json: bool) -> int | None:
    body = _frame({"id": RUN, "cmd": "key.list", "args": {}})
    assert body is not None  # a few bytes

    def call(replies: _Replies) -> int:
        try:
            replies.send_frame(body)
            keys = replies.result(RUN)
        except Gone as exc:
            fail(exc)
            return 1
        except Refusal as exc:
            return _refused(exc, as_json)
        return print_keys(keys, as_json)

    return _session(config_dir, call)


def _session(config_dir: Path, talk: Callable[[_Replies], int]) -> int | None:
    """Connect to the stream socket of ``config_dir``'s master and ``talk``; None if there is none to reach."""
    path = stream_socket(config_dir)
    connection = None if path is None else _connect(path)
    if connection is None:
        return None
    try:
        return talk(_Replies(connection))
    except BrokenPipeError:
        return 0  # the reader went away (| head): nothing left to tell, as full.py does
    except KeyboardInterrupt:
        return 130
    finally:
        connection.close()


def _config_dir(words: list[str]) -> tuple[Path, list[str]] | None:
    """``-c DIR`` (or ``--config-dir DIR``) and the words after it; None if ``words`` do not start with one."""
    if words[:1] in (["-c"], ["--config-dir"]) and len(words) >= 2 and not words[1].startswith("-"):
        return Path(words[1]), words[2:]
    return None


def key_list_json(words: list[str]) -> bool | None:
    """Whether a plain ``[-c DIR] key list [--json]`` asks for JSON; None if ``words`` are not one."""
    config = _config_dir(words)
    rest = words if config is None else config[1]
    if rest[:2] != ["key", "list"] or any(word != "--json" for word in rest[2:]):
        return None
    return bool(rest[2:])


def parse(words: list[str]) -> tuple[Path, bool, float, list[str]] | None:
    """(config dir, --json, timeout, positionals) of a plain ``run``, or None if it is not one.

    The positionals must be one run of words (argparse reads options between them otherwise than
    one would guess), with at least TARGET and FUN.
    """
    config_dir = Path(DEFAULT_CONFIG_DIR)
    if words[:1] in (["-c"], ["--config-dir"]):
        config = _config_dir(words)
        if config is None:
            return None
        config_dir, words = config
    if words[:1] != ["run"]:
        return None
    as_json, timeout, positionals, blocks = False, DEFAULT_RUN_TIMEOUT, [], 0
    rest = iter(words[1:])
    previous_positional = False
    for word in rest:
        if not word.startswith("-"):
            blocks += not previous_positional
            positionals.append(word)
            previous_positional = True
            continue
        previous_positional = False
        if word == "--json":
            as_json = True
        elif word == "--timeout":
            value = _seconds(next(rest, "-"))
            if value is None:
                return None
            timeout = value
        else:
            return None
    if blocks != 1 or len(positionals) < 2:
        return None
    return config_dir, as_json, timeout, positionals


def _seconds(text: str) -> float | None:
    """What arguments.seconds() takes (finite, above 0, at most MAX_INTERVAL); None for the rest."""
    if text.startswith("-"):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 < value <= MAX_INTERVAL else None


def _plain(value: Any) -> bool:
    """True for data JSON carries as msgpack would: finite floats, 64-bit ints, str-keyed maps, lists."""
    if value is None or isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return -INT64 <= value < 2 * INT64  # msgpack takes up to uint64
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain(item) for key, item in value.items())
    return False


def stream_socket(config_dir: Path) -> Path | None:
    """The control stream socket of the master configured in ``config_dir``; None if master.yaml is not flat."""
    try:
        text = (config_dir / CONFIG_FILE).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    document = read_simple_yaml(text)
    root_dir = None if document is None else document.get("root_dir", DEFAULT_ROOT_DIR)
    if not isinstance(root_dir, str):
        return None
    return control_dir(resolve_dir(config_dir, root_dir)) / STREAM_SOCKET


def _frame(message: dict[str, Any]) -> bytes | None:
    """``message`` as one frame (length, then JSON); None if it is larger than the master takes."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_CONTROL_FRAME:
        return None  # the full CLI refuses it in its words
    return len(body).to_bytes(4, "big") + body


def _connect(path: Path) -> socket.socket | None:
    """A connection to the stream socket at ``path``; None if there is none we may open."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(DEFAULT_REPLY_TIMEOUT)
    try:
        connection.connect(str(path))
    except OSError:
        connection.close()
        return None
    return connection


def _run(replies: _Replies, body: bytes, timeout: float, as_json: bool) -> int:
    """Send the run, gather its returns as the full client does (control/client.py: run), print them."""
    try:
        replies.send_frame(body)
        started = replies.result(RUN)
        outcome = Outcome(started["jid"], list(started["expected"]), returns=dict(started.get("returns", {})),
                          offline=dict(started.get("offline", {})), unknown=dict(started.get("unknown", {})))
    except (KeyError, TypeError, AttributeError) as exc:
        return _refused(Refusal("refused", f"unreadable reply from the master: {exc!r}"), as_json)
    except Gone as exc:
        reason = str(exc)
        if reason == MASTER_GONE:
            reason = (f"{reason} before it answered: the job may have gone out "
                      "(see saltmarsh job list once the master is back)")
        fail(reason)
        return 1
    except Refusal as exc:
        return _refused(exc, as_json)
    report_at_once(outcome)
    deadline = time.monotonic() + timeout + RETURN_GRACE_SECONDS
    while outcome.waiting:
        try:
            events = replies.events(RUN, deadline)
        except Gone as exc:
            outcome.master_gone(str(exc))
            break
        except Refusal as exc:  # an unreadable frame
            return _refused(exc, as_json)
        if events is None:
            break
        for event in events:
            outcome.returns[event["data"]["id"]] = event["data"]
    if not outcome.lost and outcome.unanswered:
        try:
            replies.send({"id": END, "cmd": "stream.end", "args": {"id": RUN}})
            replies.send({"id": OUTCOME, "cmd": "job.outcome", "args": {"jid": outcome.jid}})
            final = replies.result(OUTCOME)
        except Gone as exc:
            fail(exc)
            return 1
        except Refusal as exc:
            return _refused(exc, as_json)
        outcome.returns, outcome.silent = final["returns"], final["silent"]  # offline: as named at the start
    return print_finished(outcome, as_json)


def _refused(exc: Refusal, as_json: bool) -> int:
    """Print a refusal as full.py's main does: one line, and with --json the error document."""
    from ..service.errors import error_for  # only on this path: its typed errors name the code

    error = error_for(exc.code, str(exc))
    fail(error)
    if as_json:
        print_json({"error": {"code": error.code, "message": str(error)}})
    return 1


class _Replies:
    """The frames the master sends on one connection, read as control/client.py reads its replies."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._buffer = b""
        self._early: list[Any] = []  # events of the run that came before its reply

    def send(self, message: dict[str, Any]) -> None:
        """Send one request (Gone if the master has closed the connection)."""
        body = _frame(message)
        assert body is not None  # only small requests of our own
        self.send_frame(body)

    def send_frame(self, body: bytes) -> None:
        """Send one framed request (Gone if the master has closed the connection)."""
        try:
            self._connection.sendall(body)
        except OSError as exc:
            raise Gone(MASTER_GONE) from exc

    def result(self, request_id: int) -> Any:
        """The result of ``request_id``; Refusal if refused, Gone if no answer within DEFAULT_REPLY_TIMEOUT."""
        deadline = time.monotonic() + DEFAULT_REPLY_TIMEOUT
        while True:
            reply = self._next(deadline)
            if reply is None:
                raise Gone(f"the master did not answer within {DEFAULT_REPLY_TIMEOUT:.0f} s")
            if reply.get("events") is not None:
                if reply["id"] == RUN:
                    self._early.extend(reply["events"])
            elif reply["id"] == request_id:
                if not reply["ok"]:
                    raise Refusal(reply["code"], reply["error"])
                return reply["result"]

    def events(self, request_id: int, deadline: float) -> list[Any] | None:
        """The next events of ``request_id``'s stream; None once ``deadline`` (time.monotonic()) has passed."""
        if self._early:
            early, self._early = self._early, []
            return early
        while True:
            reply = self._next(deadline)
            if reply is None:
                return None
            if reply.get("events") and reply["id"] == request_id:
                events: list[Any] = reply["events"]
                return events

    def _next(self, deadline: float) -> Any:
        """The next frame as JSON; None at ``deadline``; Gone once the master closed the connection."""
        while True:
            if len(self._buffer) >= 4:
                length = int.from_bytes(self._buffer[:4], "big")
                if len(self._buffer) >= 4 + length:
                    body, self._buffer = self._buffer[4:4 + length], self._buffer[4 + length:]
                    try:
                        return json.loads(body)
                    except (ValueError, RecursionError) as exc:
                        raise Refusal("refused", f"unreadable reply from the master: {exc}") from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._connection.settimeout(remaining)
            try:
                chunk = self._connection.recv(1 << 20)
            except TimeoutError:
                return None
            except OSError as exc:
                raise Gone(MASTER_GONE) from exc
            if not chunk:
                raise Gone(MASTER_GONE)
            self._buffer += chunk
