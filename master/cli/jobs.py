"""``saltmarsh run`` and ``saltmarsh job list|show``."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from saltmarsh.protocol.codec import to_builtins
from saltmarsh.protocol.targeting import make_target

from ..client import JobOutcome, MasterClient
from .arguments import integer, seconds
from .output import block, clean, fail, parse_value, print_json

KWARG = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
DEFAULT_TIMEOUT = 10.0
# The key under which ``run --json`` lists the agents that did not answer. Agent ids start
# with a letter or digit (pki/ids.py), so it can never be an agent's own key.
MISSING_KEY = "_missing"


def register(sub: Any) -> None:
    """Add ``run`` and the ``job`` command family."""
    run = sub.add_parser("run", help="run a function on the targeted agents")
    run.add_argument("-L", "--list", dest="as_list", action="store_true", help="TARGET is a comma-separated id list")
    run.add_argument("-l", "--labels", dest="as_labels", action="store_true", help="TARGET is key=value,... labels")
    run.add_argument("--timeout", type=seconds(), default=DEFAULT_TIMEOUT, help="seconds to wait for every agent")
    run.add_argument("--json", action="store_true",
                     help=f"print {{agent: result}}, and {{{MISSING_KEY!r}: {{agent: reason}}}} if any did not answer")
    run.add_argument("target")
    run.add_argument("function")
    run.add_argument("arguments", nargs="*", metavar="ARG", help="positional args and key=value kwargs")
    run.set_defaults(handler=run_job)
    job = sub.add_parser("job", help="jobs in the job cache")
    actions = job.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="newest jobs first")
    listing.add_argument("--limit", type=integer(1), default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=job_list)
    show = actions.add_parser("show", help="a job and its returns")
    show.add_argument("jid")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=job_show)


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


def run_job(args: argparse.Namespace) -> int:
    """Run a job, print every return, and name each agent that did not answer (at once if known offline)."""
    try:
        target = make_target(args.target, as_list=args.as_list, as_labels=args.as_labels)
    except ValueError as exc:
        fail(f"bad target: {exc}")
        return 2
    fun_args, fun_kwargs = split_arguments(args.arguments)
    with MasterClient.from_config_dir(args.config_dir) as client:
        outcome = client.run(target, args.function, fun_args, fun_kwargs, args.timeout, on_started=_report_at_once)
    if args.json:
        print_json(json_outcome(outcome))
    else:
        _print_outcome(outcome)
    sys.stdout.flush()  # the returns come before the lines that sum them up
    _report_at_end(outcome)
    failed = any(not ret["success"] for ret in outcome.returns.values())
    return 0 if outcome.complete and not failed else 1


def json_outcome(outcome: JobOutcome) -> dict[str, Any]:
    """``{agent: result}`` (``{"error": ...}`` for a failed agent), plus MISSING_KEY if any did not answer."""
    shown: dict[str, Any] = {agent: _result_of(ret) for agent, ret in sorted(outcome.returns.items())}
    if outcome.missing:
        shown[MISSING_KEY] = dict(sorted(outcome.missing.items()))
    return shown


def _report_at_once(outcome: JobOutcome) -> None:
    """Name the agents the job will not reach before waiting for the others."""
    for agent, why in sorted(outcome.unknown.items()):
        print(f"{clean(agent)}: not sent job {outcome.jid}: {clean(why)}", file=sys.stderr)
    for agent, why in sorted(outcome.offline.items()):
        print(f"{clean(agent)}: did not answer job {outcome.jid}: {clean(why)}", file=sys.stderr)
    sys.stderr.flush()


def _report_at_end(outcome: JobOutcome) -> None:
    if outcome.lost:
        answered = len(outcome.returns)
        fail(f"{outcome.lost} while job {outcome.jid} ran ({answered} of {len(outcome.expected)} agents had "
             f"answered); the agents keep their returns, and once the master is back "
             f"`saltmarsh job show {outcome.jid}` holds them")
        return
    for agent, why in sorted(outcome.silent.items()):
        if agent not in outcome.offline:  # those were named when the job went out
            print(f"{clean(agent)}: did not answer job {outcome.jid}: {clean(why)}", file=sys.stderr)
    failed = sorted(agent for agent, ret in outcome.returns.items() if not ret["success"])
    if failed:
        fail(f"job {outcome.jid} failed on {len(failed)} of {len(outcome.returns)} agents that answered: "
             f"{', '.join(failed)}")


def _result_of(ret: dict[str, Any]) -> Any:
    return ret["result"] if ret["success"] else {"error": ret.get("error")}


def _error_line(ret: dict[str, Any]) -> str:
    error = ret.get("error")
    error = error if isinstance(error, dict) else {}
    return f"    ERROR {clean(error.get('type', '?'))}: {clean(error.get('message', ''))}"


def _print_outcome(outcome: JobOutcome) -> None:
    for agent, ret in sorted(outcome.returns.items()):
        print(f"{clean(agent)}:")
        print(block(ret["result"]) if ret["success"] else _error_line(ret))


def job_list(args: argparse.Namespace) -> int:
    """Print the newest jobs."""
    with MasterClient.from_config_dir(args.config_dir) as client:
        jobs = client.call("job.list", limit=args.limit)
    if args.json:
        print_json(jobs)
        return 0
    print(f"{'JID':<22} {'FUNCTION':<24} {'RETURNED':>8}  TARGET")
    for job in jobs:
        target = job["target"]
        labels = ",".join(f"{k}={v}" for k, v in target["labels"].items())
        shown = target["pattern"] or ",".join(target["ids"]) or labels
        print(f"{clean(job['jid']):<22} {clean(job['fun']):<24} {job['returned']:>3}/{job['expected']:<4}  "
              f"{clean(shown)}")
    return 0


def job_show(args: argparse.Namespace) -> int:
    """Print one job with its returns and silent agents."""
    with MasterClient.from_config_dir(args.config_dir) as client:
        job = client.call("job.show", jid=args.jid)
    if args.json:
        print_json(to_builtins(job))
        return 0
    print(f"jid: {clean(job['jid'])}  function: {clean(job['fun'])}  created: {clean(job['created'])}")
    print(f"args: {clean(job['args'])}  kwargs: {clean(job['kwargs'])}")
    for agent, ret in sorted(job["returns"].items()):
        print(f"{clean(agent)}:")
        print(block(ret["result"]) if ret["success"] else _error_line(ret))
    for agent, why in sorted(job["silent"].items()):
        print(f"{clean(agent)}: no return: {clean(why)}")
    return 0
