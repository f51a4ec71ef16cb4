"""``saltmarsh agent list [TARGET] [--json]`` and ``saltmarsh agent show ID [--json]``: the fleet view."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .arguments import seconds, target_arguments
from .connect import connect, given
from .output import block, clean, fail, print_json
from .table import HELP


def register(sub: Any) -> None:
    """Add the ``agent`` command family."""
    agent = sub.add_parser("agent", help=HELP["agent"])
    actions = agent.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every agent with a key, one line each")
    target_arguments(listing, "which agents (default: all)")
    listing.add_argument("--timeout", type=seconds(), default=None, help="seconds to wait for their job counts")
    listing.add_argument("--json", action="store_true", help="a list of agents; times in seconds since the epoch")
    listing.set_defaults(handler=agent_list)
    show = actions.add_parser("show", help="one agent, every field")
    show.add_argument("id")
    show.add_argument("--timeout", type=seconds(), default=None, help="seconds to wait for its job count")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=agent_show)


def _when(ts: float | None) -> str:
    import datetime

    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _jobs(view: dict[str, Any]) -> str:
    if view["running"] is None:
        return "?"
    return f"{view['running']}" + (f"+{view['abandoned']}a" if view["abandoned"] else "")


def _libvirt(view: dict[str, Any]) -> str:
    if view["libvirt"] is None:
        return "-"
    return ("yes" if view["libvirt"] else "no") + (" (maint)" if view["maintenance"] else "")


def agent_list(args: argparse.Namespace) -> int:
    """One line per agent: id, key, state and since when, last seen, jobs, libvirt, version, address, labels."""
    from saltmarsh.protocol.targeting import make_target

    from ..service.types.agents import AgentListRequest

    try:
        target = None if args.target is None else make_target(args.target, as_list=args.as_list,
                                                               as_labels=args.as_labels)
    except ValueError as exc:
        fail(f"bad target: {exc}")
        return 2
    with connect(args.config_dir) as client:
        views: list[dict[str, Any]] = client.request(given(AgentListRequest, target=target, timeout=args.timeout))
    if args.json:
        print_json(views)
        return 0
    print(f"{'ID':<16} {'KEY':<8} {'STATE':<6} {'SINCE':<20} {'LAST SEEN':<20} {'JOBS':>5} {'LIBVIRT':<10} "
          f"{'VERSION':<8} {'ADDRESS':<21} LABELS")
    for v in views:
        state = "never" if v["state"] == "never connected" else v["state"]
        labels = ",".join(f"{k}={val}" for k, val in sorted(v["labels"].items()))
        print(f"{clean(v['id']):<16} {v['key']:<8} {state:<6} {_when(v['since']):<20} {_when(v['last_seen']):<20} "
              f"{_jobs(v):>5} {_libvirt(v):<10} {clean(v['version']) or '-':<8} {clean(v['address']) or '-':<21} "
              f"{clean(labels) or '-'}")
    return 0


def agent_show(args: argparse.Namespace) -> int:
    """Every field the master holds of one agent."""
    from ..service.types.agents import AgentShowRequest

    with connect(args.config_dir) as client:
        view: dict[str, Any] = client.request(given(AgentShowRequest, id=args.id, timeout=args.timeout))
    if args.json:
        print_json(view)
        return 0
    shown = dict(view)
    for name in ("since", "last_seen", "first_seen"):
        shown[name] = _when(view[name])
    print(f"{clean(view['id'])}:")
    print(block({k: v for k, v in shown.items() if k != "id"}))
    sys.stdout.flush()
    return 0
