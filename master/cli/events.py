"""``saltmarsh events [GLOB] [--json] [--count N]``: stream the master's events."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .arguments import integer, seconds
from .connect import connect
from .output import clean, json_safe
from .table import HELP


def register(sub: Any) -> None:
    """Add the ``events`` command."""
    events = sub.add_parser("events", help=HELP["events"])
    events.add_argument("pattern", nargs="?", default="", metavar="GLOB")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument("--count", type=integer(0), default=0, help="stop after N events (0: never)")
    events.add_argument("--idle-timeout", type=seconds(), default=None, help="stop after S seconds without an event")
    events.set_defaults(handler=stream_events)


def event_line(event: Any) -> str:
    """One event for people: time, tag, data as JSON; what came from the agent escaped (see output.clean)."""
    import datetime

    from saltmarsh.protocol.codec import to_builtins

    when = datetime.datetime.fromtimestamp(event.ts).strftime("%H:%M:%S.%f")[:-3]
    data = json.dumps(json_safe(to_builtins(event.data)), sort_keys=True, default=repr)
    return f"{when} {clean(event.tag)} {clean(data)}"


def stream_events(args: argparse.Namespace) -> int:
    """Print events as they arrive."""
    from saltmarsh.protocol.codec import to_builtins

    seen = 0
    with connect(args.config_dir) as client:
        for event in client.events(args.pattern, idle_timeout=args.idle_timeout):
            if args.json:
                print(json.dumps(json_safe(to_builtins(event)), sort_keys=True, default=repr))
            else:
                print(event_line(event))
            sys.stdout.flush()
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0
