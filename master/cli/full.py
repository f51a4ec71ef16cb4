"""The full ``saltmarsh`` command line: the argparse command tree, one module per command family.

What ``saltmarsh`` runs when its fast path (fast.py) does not take the command.

Exit status: 0 success; 1 a job left agents silent or failed, or the master
refused or did not answer; 2 bad usage. Every failure is one line on stderr,
never a traceback: usage errors from the parser (OneLineParser), the master's
refusals (MasterError), a config file that cannot be read (ConfigError), and
the operating system's refusals (OSError: a file or socket we may not open).
With ``--json``, a refusal of the master is also printed on stdout as
``{"error": {"code": CODE, "message": LINE}}``, CODE its stable kind
(master/service/errors.py: not_found, conflict, unavailable, timed_out, refused,
invalid, internal), the shape the HTTP API answers with.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from saltmarsh.protocol.bounds import DEFAULT_CONFIG_DIR
from saltmarsh.protocol.errors import ConfigError

from ..errors import CommandError, MasterError
from .arguments import OneLineParser
from .output import fail, print_json
from .table import HELP, MODULES


def build_parser(command: str | None = None) -> OneLineParser:
    """The command tree: whole, or (``command`` given) whole only for ``command``.

    The other commands are there by name and help alone, which is all ``saltmarsh --help`` and
    argparse's "invalid choice" show of them, and their modules are not imported: argparse builds
    each parser in Python, and the whole tree has some fifty. An unknown ``command`` gets the whole tree.
    """
    parser = OneLineParser(prog="saltmarsh", description="Control a saltmarsh master.")
    parser.add_argument("-c", "--config-dir", type=Path, default=Path(DEFAULT_CONFIG_DIR), help="holds master.yaml")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in MODULES.items():
        if command in MODULES and name != command:
            sub.add_parser(name, help=HELP[name])
        else:  # a module of several commands has register_<command> for each
            family = importlib.import_module(f"{__package__}.{module}")
            getattr(family, f"register_{name}", family.register)(sub)
    return parser


def command_word(argv: list[str]) -> str | None:
    """The command ``argv`` names (its first word that is neither an option nor -c's value), if any."""
    words = iter(argv)
    for word in words:
        if word in ("-c", "--config-dir"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``saltmarsh`` command."""
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(command_word(words)).parse_args(words)
    try:
        status: int = args.handler(args)
    except (MasterError, ConfigError) as exc:
        fail(exc)
        if isinstance(exc, CommandError) and getattr(args, "json", False):
            print_json({"error": {"code": exc.code, "message": str(exc)}})
        return 1
    except BrokenPipeError:
        return 0  # the reader went away (| head): nothing left to tell
    except OSError as exc:
        fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return status
