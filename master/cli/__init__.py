"""``saltmarsh``: the operator's command line. One module per command family.

Exit status: 0 success; 1 a job left agents silent or failed, or the master
refused or did not answer; 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import DEFAULT_CONFIG_DIR
from ..errors import MasterError
from . import events, jobs, keys, pki, virt


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(prog="saltmarsh", description="Control a saltmarsh master.")
    parser.add_argument("-c", "--config-dir", type=Path, default=DEFAULT_CONFIG_DIR, help="holds master.yaml")
    sub = parser.add_subparsers(dest="command", required=True)
    for family in (keys, jobs, events, virt, pki):
        family.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``saltmarsh`` command."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except MasterError as exc:
        print(f"saltmarsh: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return status
