"""``saltmarsh run [--async] [-b N|P%]`` and ``saltmarsh job list|show|wait|running|kill``.

The schemas and the client are imported by the handlers that use them, not here: building the
parser (``--help``) needs none of them.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING, Any

from saltmarsh.protocol.bounds import MAX_BATCH_COUNT, MAX_BATCH_PAUSE

from .arguments import integer, seconds, target_arguments
from .connect import connect, given
from .jobview import MISSING_KEY, error_line, print_finished, report_at_once, split_arguments
from .output import block, clean, fail, print_json
from .table import HELP

if TYPE_CHECKING:
    from saltmarsh.protocol.messages import Target

    from ..service.types.jobs import JobOutcome

def register(sub: Any) -> None:
    """Add ``run`` and ``job``."""
    register_run(sub)
    register_job(sub)


def register_run(sub: Any) -> None:
    """Add ``run``."""
    run = sub.add_parser("run", help=HELP["run"])
    run.add_argument("-L", "--list", dest="as_list", action="store_true", help="TARGET is a comma-separated id list")
    run.add_argument("-l", "--labels", dest="as_labels", action="store_true", help="TARGET is key=value,... labels")
    run.add_argument("--timeout", type=seconds(), default=None,
                     help="the job's deadline on each agent, and how long to wait for them")
    run.add_argument("--json", action="store_true",
                     help=f"print {{agent: result}}, and {{{MISSING_KEY!r}: {{agent: reason}}}} if any did not answer")
    run.add_argument("--async", dest="run_async", action="store_true",
                     help="print the jid at once and do not wait (see `saltmarsh job wait JID`)")
    run.add_argument("-b", "--batch", type=batch_size, default=None, metavar="N|P%",
                     help="run on at most N agents (or P %% of them) at a time, the next as one finishes")
    run.add_argument("--batch-wait", type=seconds(MAX_BATCH_PAUSE), default=None, metavar="S",
                     help="with -b: pause S seconds after each agent finishes before the next starts")
    run.add_argument("--fail-fast", action="store_true",
                     help="with -b: start no more agents once one failed or did not answer")
    run.add_argument("target")
    run.add_argument("function")
    run.add_argument("arguments", nargs="*", metavar="ARG", help="positional args and key=value kwargs")
    run.set_defaults(handler=run_job)


def register_job(sub: Any) -> None:
    """Add ``job``."""
    job = sub.add_parser("job", help=HELP["job"])
    actions = job.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="newest jobs first")
    listing.add_argument("--limit", type=integer(1), default=None)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=job_list)
    show = actions.add_parser("show", help="a job and its returns")
    show.add_argument("jid")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=job_show)
    wait = actions.add_parser("wait", help="wait for a job's returns and print them as run does")
    wait.add_argument("jid")
    wait.add_argument("--timeout", type=seconds(), default=None,
                      help="seconds to wait (default: until the job's deadline has passed)")
    wait.add_argument("--json", action="store_true", help="as run --json")
    wait.set_defaults(handler=job_wait)
    running = actions.add_parser("running", help="the jobs agents hold now: queued, running, abandoned")
    target_arguments(running, "whose jobs (default: every agent)")
    running.add_argument("--timeout", type=seconds(), default=None, help="seconds to wait for the agents")
    running.add_argument("--json", action="store_true")
    running.set_defaults(handler=job_running)
    kill = actions.add_parser("kill", help="end a job on the agents still running it")
    kill.add_argument("jid")
    target_arguments(kill, "where (default: every expected agent that has not answered)")
    kill.add_argument("--timeout", type=seconds(), default=None, help="seconds to wait for the agents")
    kill.add_argument("--json", action="store_true")
    kill.set_defaults(handler=job_kill)


def batch_size(text: str) -> dict[str, Any]:
    """An argument type: ``N`` (a count of agents) or ``P%`` (a percentage of them), as run.batch takes it."""
    if not text.endswith("%"):
        return {"count": integer(1, MAX_BATCH_COUNT)(text)}
    try:
        percent = float(text[:-1])
    except ValueError:
        percent = math.nan
    if not 0 < percent <= 100:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage above 0 and at most 100")
    return {"percent": percent}


def _target(args: argparse.Namespace) -> Target | None:
    """The command's TARGET as a Target (None if there is none); ValueError if it does not parse."""
    from saltmarsh.protocol.targeting import make_target

    if args.target is None:
        return None
    return make_target(args.target, as_list=args.as_list, as_labels=args.as_labels)


def run_job(args: argparse.Namespace) -> int:
    """Run a job, print every return, and name each agent that did not answer (at once if known offline)."""
    try:
        target = _target(args)
    except ValueError as exc:
        fail(f"bad target: {exc}")
        return 2
    assert target is not None  # TARGET is a required argument of run
    if (args.batch_wait or args.fail_fast) and args.batch is None:
        fail("--batch-wait and --fail-fast go with -b N|P%")
        return 2
    if args.batch is not None and args.run_async:
        fail("-b and --async cannot be combined: a batch is watched as it rolls (it goes on if run stops)")
        return 2
    try:
        fun_args, fun_kwargs = split_arguments(args.arguments)
    except ValueError as exc:  # a value YAML cannot build (an integer of thousands of digits)
        fail(f"bad argument: {exc}")
        return 2
    with connect(args.config_dir) as client:
        if args.batch is not None:
            from ..service.types.jobs import BatchSize

            outcome = client.run_batch(target, args.function, fun_args, fun_kwargs, args.timeout,
                                       batch=BatchSize(**args.batch), pause=args.batch_wait,
                                       fail_fast=args.fail_fast, on_started=_report_batch_start)
            return print_finished(outcome, args.json)
        if args.run_async:
            return _print_submitted(client.submit(target, args.function, fun_args, fun_kwargs, args.timeout),
                                    args.json)
        outcome = client.run(target, args.function, fun_args, fun_kwargs, args.timeout, on_started=report_at_once)
    return print_finished(outcome, args.json)


def job_wait(args: argparse.Namespace) -> int:
    """Wait for a job's returns and print them, and exit, as ``run`` would have."""
    with connect(args.config_dir) as client:
        outcome = client.wait(args.jid, args.timeout, on_started=report_at_once)
    return print_finished(outcome, args.json)


def _print_submitted(outcome: JobOutcome, as_json: bool) -> int:
    """``run --async``: the jid on stdout; the agents it will not reach on stderr."""
    if as_json:
        print_json({"jid": outcome.jid, "expected": outcome.expected, "offline": outcome.offline,
                    "unknown": outcome.unknown})
    else:
        print(outcome.jid)
        sys.stdout.flush()
        report_at_once(outcome)
    return 0


def _report_batch_start(outcome: JobOutcome, size: int) -> None:
    """Say how the batch will roll, then name the agents it will not start."""
    awaited = len(outcome.expected) - len(outcome.offline)
    print(f"batch {outcome.jid}: {awaited} agent{'' if awaited == 1 else 's'}, {size} at a time", file=sys.stderr)
    report_at_once(outcome)


def job_list(args: argparse.Namespace) -> int:
    """Print the newest jobs."""
    with connect(args.config_dir) as client:
        from ..service.types.jobs import JobListRequest

        jobs = client.request(given(JobListRequest, limit=args.limit))
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
    from saltmarsh.protocol.codec import to_builtins

    from ..service.types.jobs import JobRequest

    with connect(args.config_dir) as client:
        job = client.request(JobRequest(args.jid))
    if args.json:
        print_json(to_builtins(job))
        return 0
    print(f"jid: {clean(job['jid'])}  function: {clean(job['fun'])}  created: {clean(job['created'])}")
    print(f"args: {clean(job['args'])}  kwargs: {clean(job['kwargs'])}")
    for agent, ret in sorted(job["returns"].items()):
        print(f"{clean(agent)}:")
        print(block(ret["result"]) if ret["success"] else error_line(ret))
    for agent, why in sorted(job["silent"].items()):
        print(f"{clean(agent)}: no return: {clean(why)}")
    return 0


def job_running(args: argparse.Namespace) -> int:
    """List the jobs the target's agents hold: jid, function, agent, state, started, elapsed."""
    import datetime

    import msgspec

    from saltmarsh.protocol.codec import to_builtins

    from ..service.types.jobs import RunningReply, RunningRequest

    try:
        target = _target(args)
    except ValueError as exc:
        fail(f"bad target: {exc}")
        return 2
    with connect(args.config_dir) as client:
        reply = msgspec.convert(client.request(given(RunningRequest, target=target, timeout=args.timeout)),
                                type=RunningReply)
    rows = [{"agent": agent, **to_builtins(job)} for agent, jobs in sorted(reply.running.items()) for job in jobs]
    if args.json:
        print_json(rows)
    else:
        print(f"{'JID':<22} {'FUNCTION':<24} {'AGENT':<16} {'STATE':<9} {'STARTED':<20} {'ELAPSED':>9}")
        for row in rows:
            started = datetime.datetime.fromtimestamp(row["started"], datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(f"{clean(row['jid']):<22} {clean(row['fun']):<24} {clean(row['agent']):<16} {row['state']:<9} "
                  f"{started:<20} {row['elapsed']:>8.1f}s")
    sys.stdout.flush()
    return _report_missing(reply.missing, "did not say which jobs it runs")


def job_kill(args: argparse.Namespace) -> int:
    """Kill a job; print what each agent did (killed and how, or why there was nothing to kill)."""
    import msgspec

    from saltmarsh.protocol.codec import to_builtins

    from ..service.types.jobs import KillReply, KillRequest

    try:
        target = _target(args)
    except ValueError as exc:
        fail(f"bad target: {exc}")
        return 2
    with connect(args.config_dir) as client:
        reply = msgspec.convert(client.request(given(KillRequest, jid=args.jid, target=target, timeout=args.timeout)),
                                type=KillReply)
    if args.json:
        print_json({agent: to_builtins(report) for agent, report in reply.reports.items()})
    for agent, report in sorted(reply.reports.items()):
        if not args.json:
            print(f"{clean(agent)}: {report.outcome} job {clean(reply.jid)}: {clean(report.how)}")
    sys.stdout.flush()
    return _report_missing(reply.missing, f"did not answer the kill of job {reply.jid}")


def _report_missing(missing: dict[str, str], what: str) -> int:
    """Name each agent that did not answer; exit status 1 if there is any."""
    for agent, why in sorted(missing.items()):
        print(f"{clean(agent)}: {what}: {clean(why)}", file=sys.stderr)
    return 1 if missing else 0
