"""``saltmarsh``: the operator's command line. One module per command family.

Exit status: 0 success; 1 a job left agents silent or failed, or the master
refused or did not answer; 2 bad usage. Every failure is one line on stderr,
never a traceback: usage errors from the parser (OneLineParser), the master's
refusals (MasterError), a config file that cannot be read (ConfigError), and
the operating system's refusals (OSError: a file or socket we may not open).
"""

from __future__ import annotations

from pathlib import Path

from saltmarsh.protocol.bounds import DEFAULT_CONFIG_DIR
from saltmarsh.protocol.errors import ConfigError

from ..errors import MasterError
from . import agents, events, images, jobs, keys, pki, virt
from .arguments import OneLineParser
from .output import fail


def build_parser() -> OneLineParser:
    """The whole command tree."""
    parser = OneLineParser(prog="saltmarsh", description="Control a saltmarsh master.")
    parser.add_argument("-c", "--config-dir", type=Path, default=Path(DEFAULT_CONFIG_DIR), help="holds master.yaml")
    sub = parser.add_subparsers(dest="command", required=True)
    for family in (keys, agents, jobs, events, virt, pki, images):
        family.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``saltmarsh`` command."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except (MasterError, ConfigError) as exc:
        fail(exc)
        return 1
    except BrokenPipeError:
        return 0  # the reader went away (| head): nothing left to tell
    except OSError as exc:
        fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return status
