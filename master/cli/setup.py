"""``saltmarsh host setup TARGET``: bring hypervisors to their profile, or (``--dry-run``) show what differs.

Printed per host and state: ``unchanged``, ``would change`` or ``changed`` with each
difference (``facet: now -> wanted``, and a file's diff), or ``failed`` or ``rolled back``
(a bridge undone: the agent lost the master) with the reason. Each state's line also goes to
stderr as soon as the host reports it (progress). Exit 1 if any state failed or was rolled back,
or any host did not answer.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .arguments import seconds
from .connect import connect, given
from .output import clean, fail, print_json

if TYPE_CHECKING:
    from ..control.messages import Event

SHOWN = {"unchanged": "unchanged", "would_change": "would change", "changed": "changed", "failed": "failed",
         "rolled_back": "rolled back"}
FAILED = ("failed", "rolled_back")


def register(host_actions: Any) -> None:
    """Add ``host setup`` to the ``host`` family."""
    setup = host_actions.add_parser("setup", help="bring hypervisors to their host profile (packages, sysctls, "
                                                  "groups, files, services)")
    setup.add_argument("target", help="agent id or glob (with -L a list, with -l labels)")
    setup.add_argument("-L", "--list", dest="as_list", action="store_true", help="TARGET is a comma-separated id list")
    setup.add_argument("-l", "--labels", dest="as_labels", action="store_true", help="TARGET is key=value,... labels")
    setup.add_argument("--profile", help="the profile for every targeted host (default: by their labels)")
    setup.add_argument("--dry-run", action="store_true", help="change nothing: show what would change")
    setup.add_argument("--timeout", type=seconds(), default=None, help="seconds to wait for the hosts")
    setup.add_argument("--json", action="store_true")
    setup.set_defaults(handler=host_setup)


def host_setup(args: argparse.Namespace) -> int:
    """Run the setup, print each host's states; 1 if any failed or a host did not answer."""
    from saltmarsh.protocol.targeting import make_target  # with the message schemas: only when it runs

    try:
        target = make_target(args.target, as_list=args.as_list, as_labels=args.as_labels)
    except ValueError as exc:
        fail(f"bad target: {exc}")
        return 2
    from ..service.types.hosts import SetupRequest

    request = given(SetupRequest, target=target, profile=args.profile, dry_run=args.dry_run, timeout=args.timeout)
    on_event = (lambda event: None) if args.json else _progress
    with connect(args.config_dir, reply_timeout=request.timeout + 30) as client:
        result = client.request_with_events(request, on_event)
    hosts = result["hosts"]
    if args.json:
        print_json(result)
    else:
        for host, outcome in hosts.items():
            print("\n".join(host_lines(host, outcome)))
    return 1 if any(_failed(outcome) for outcome in hosts.values()) else 0


def _failed(outcome: dict[str, Any]) -> bool:
    return "error" in outcome or any(r.get("status") in FAILED for r in outcome.get("results", []))


def _progress(event: Event) -> None:
    data = event.data if isinstance(event.data, dict) else {}
    host = event.tag.split("/")[2]
    print(f"{clean(host)}: {clean(data.get('name', '?'))} {SHOWN.get(data.get('status', ''), '?')}",
          file=sys.stderr, flush=True)


def host_lines(host: str, outcome: dict[str, Any]) -> list[str]:
    """One host's report: a heading, a line per state with its changes below, and a summary."""
    heading = f"{clean(host)} (profile {clean(outcome.get('profile', '?'))}"
    if "error" in outcome:
        return [f"{heading}): failed: {clean(outcome['error'])}"]
    lines = [f"{heading}, {clean(outcome.get('os_family', '?'))}{', dry run' if outcome.get('dry_run') else ''}):"]
    counts = dict.fromkeys(SHOWN, 0)
    for result in outcome.get("results", []):
        status = result.get("status", "")
        counts[status] = counts.get(status, 0) + 1
        reason = f": {clean(result['reason'])}" if result.get("reason") else ""
        lines.append(f"    {SHOWN.get(status, clean(status)):<13} {clean(result.get('name', '?'))}{reason}")
        for facet, change in sorted((result.get("changes") or {}).items()):
            old, new = change if isinstance(change, list) and len(change) == 2 else ("?", "?")
            lines.append(f"        {clean(facet)}: {clean(old)} -> {clean(new)}")
        lines.extend(f"        | {clean(line)}" for line in str(result.get("detail") or "").splitlines())
    summary = ", ".join(f"{count} {SHOWN[status]}" for status, count in counts.items() if status in SHOWN)
    lines.append(f"    {summary}")
    if outcome.get("agent_restart"):
        back = outcome.get("agent_back_seconds")
        when = f"back after {back} s" if back is not None else "not back yet: see `saltmarsh agent show`"
        lines.append(f"    the agent restarted once idle, {clean(outcome['agent_restart'])}: {when}")
    return lines
