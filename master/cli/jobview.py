"""How a job's outcome prints (``run``, ``job wait``), how a command line's words become its arguments,
and how ``key list`` prints: what the full CLI and its fast path both print.

Imports only the stdlib (and output.py, whose YAML is imported only for a value that needs it): the
full CLI (jobs.py) and its fast path (master/cli/fast.py) print through these same functions, so a
ping prints the same either way. What an outcome means (complete, missing, timed out) is the service
layer's rule, OutcomeRules (master/service/outcome.py), which both outcomes carry.
"""

from __future__ import annotations

import re
import sys

from .output import block, clean, fail, parse_value, print_json

# typing costs every CLI start some 2 ms and only the type checker needs it (it reads this name as True).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..service.outcome import OutcomeRules

KWARG = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
# The key under which ``run --json`` lists the agents that did not answer. Agent ids start
# with a letter or digit (pki/ids.py), so it can never be an agent's own key.
MISSING_KEY = "_missing"


def split_arguments(words: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """Split command-line words into positional args and key=value kwargs, YAML-typed."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for word in words:
        match = KWARG.match(word)
        if match:
            kwargs[match.group(1)] = parse_value(match.group(2))
        else:
            args.append(parse_value(word))
    return args, kwargs


def print_finished(outcome: OutcomeRules, as_json: bool) -> int:
    """Print a finished job's returns (YAML-like blocks, or JSON), then who did not answer; its exit status."""
    if as_json:
        print_json(json_outcome(outcome))
    else:
        _print_outcome(outcome)
    sys.stdout.flush()  # the returns come before the lines that sum them up
    _report_at_end(outcome)
    failed = any(not ret["success"] for ret in outcome.answered.values())
    return 0 if outcome.complete and not failed else 1


def json_outcome(outcome: OutcomeRules) -> dict[str, Any]:
    """``{agent: result}`` (``{"error": ...}`` for a failed agent), plus MISSING_KEY if any did not answer."""
    shown: dict[str, Any] = {agent: _result_of(ret) for agent, ret in sorted(outcome.answered.items())}
    if outcome.missing:
        shown[MISSING_KEY] = dict(sorted(outcome.missing.items()))
    return shown


def report_at_once(outcome: OutcomeRules) -> None:
    """Name the agents the job will not reach before waiting for the others."""
    for agent, why in sorted(outcome.unknown.items()):
        print(f"{clean(agent)}: not sent job {outcome.jid}: {clean(why)}", file=sys.stderr)
    for agent, why in sorted(outcome.offline.items()):
        print(f"{clean(agent)}: did not answer job {outcome.jid}: {clean(why)}", file=sys.stderr)
    sys.stderr.flush()


def _report_at_end(outcome: OutcomeRules) -> None:
    if outcome.lost:
        fail(f"{outcome.lost} while job {outcome.jid} ran ({len(outcome.returns)} of {len(outcome.expected)} "
             f"agents had answered); the agents keep their returns, and once the master is back "
             f"`saltmarsh job show {outcome.jid}` holds them")
        return
    for agent, why in sorted({**outcome.silent, **outcome.timed_out}.items()):
        if agent not in outcome.offline:  # those were named when the job went out
            print(f"{clean(agent)}: did not answer job {outcome.jid}: {clean(why)}", file=sys.stderr)
    for agent, why in sorted(outcome.not_started.items()):
        print(f"{clean(agent)}: not started (batch {outcome.jid}): {clean(why)}", file=sys.stderr)
    answered = outcome.answered
    failed = sorted(agent for agent, ret in answered.items() if not ret["success"])
    if failed:
        fail(f"job {outcome.jid} failed on {len(failed)} of {len(answered)} agents that answered: "
             f"{', '.join(failed)}")


def _result_of(ret: dict[str, Any]) -> Any:
    return ret["result"] if ret["success"] else {"error": ret.get("error")}


def error_line(ret: dict[str, Any]) -> str:
    """A failed return as one indented ERROR line."""
    error = ret.get("error")
    error = error if isinstance(error, dict) else {}
    return f"    ERROR {clean(error.get('type', '?'))}: {clean(error.get('message', ''))}"


def _print_outcome(outcome: OutcomeRules) -> None:
    for agent, ret in sorted(outcome.answered.items()):
        print(f"{clean(agent)}:")
        print(block(ret["result"]) if ret["success"] else error_line(ret))


def print_keys(keys: dict[str, list[str]], as_json: bool) -> int:
    """Print ``key list``'s answer: the ids under each state (or its JSON); exit status 0."""
    if as_json:
        print_json(keys)
        return 0
    for state in ("accepted", "pending", "rejected"):
        print(f"{state.capitalize()} keys:")
        for agent_id in keys[state]:
            print(f"  {clean(agent_id)}")
    return 0
