"""``saltmarsh run`` and ``saltmarsh job list|show``."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from saltmarsh.protocol.codec import to_builtins
from saltmarsh.protocol.targeting import make_target

from ..client import JobOutcome, MasterClient
from .output import block, parse_value, print_json

KWARG = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
DEFAULT_TIMEOUT = 10.0


def register(sub: Any) -> None:
    """Add ``run`` and the ``job`` command family."""
    run = sub.add_parser("run", help="run a function on the targeted agents")
    run.add_argument("-L", "--list", dest="as_list", action="store_true", help="TARGET is a comma-separated id list")
    run.add_argument("-l", "--labels", dest="as_labels", action="store_true", help="TARGET is key=value,... labels")
    run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for every agent")
    run.add_argument("--json", action="store_true", help="print {agent: result} only")
    run.add_argument("target")
    run.add_argument("function")
    run.add_argument("arguments", nargs="*", metavar="ARG", help="positional args and key=value kwargs")
    run.set_defaults(handler=run_job)
    job = sub.add_parser("job", help="jobs in the job cache")
    actions = job.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="newest jobs first")
    listing.add_argument("--limit", type=int, default=50)
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
    """Run a job, print every return, and name each agent that did not answer."""
    try:
        target = make_target(args.target, as_list=args.as_list, as_labels=args.as_labels)
    except ValueError as exc:
        print(f"saltmarsh: bad target: {exc}", file=sys.stderr)
        return 2
    fun_args, fun_kwargs = split_arguments(args.arguments)
    with MasterClient.from_config_dir(args.config_dir) as client:
        outcome = client.run(target, args.function, fun_args, fun_kwargs, args.timeout)
    if args.json:
        print_json({agent: _result_of(ret) for agent, ret in sorted(outcome.returns.items())})
    else:
        _print_outcome(outcome)
    for agent, why in sorted(outcome.silent.items()):
        print(f"{agent}: did not answer job {outcome.jid}: {why}", file=sys.stderr)
    failed = any(not ret["success"] for ret in outcome.returns.values())
    return 0 if outcome.complete and not failed else 1


def _result_of(ret: dict[str, Any]) -> Any:
    return ret["result"] if ret["success"] else {"error": ret.get("error")}


def _print_outcome(outcome: JobOutcome) -> None:
    for agent, ret in sorted(outcome.returns.items()):
        print(f"{agent}:")
        if ret["success"]:
            print(block(ret["result"]))
        else:
            error = ret.get("error") or {}
            print(f"    ERROR {error.get('type', '?')}: {error.get('message', '')}")


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
        print(f"{job['jid']:<22} {job['fun']:<24} {job['returned']:>3}/{job['expected']:<4}  {shown}")
    return 0


def job_show(args: argparse.Namespace) -> int:
    """Print one job with its returns and silent agents."""
    with MasterClient.from_config_dir(args.config_dir) as client:
        job = client.call("job.show", jid=args.jid)
    if args.json:
        print_json(to_builtins(job))
        return 0
    print(f"jid: {job['jid']}  function: {job['fun']}  created: {job['created']}")
    print(f"args: {job['args']}  kwargs: {job['kwargs']}")
    for agent, ret in sorted(job["returns"].items()):
        print(f"{agent}:")
        print(block(ret["result"]) if ret["success"] else f"    ERROR {ret.get('error')}")
    for agent, why in sorted(job["silent"].items()):
        print(f"{agent}: no return: {why}")
    return 0
