"""How the CLI reads its words: a parser whose errors are one line, and argument types with our wording.

Numbers are checked here, before anything is sent, so that ``nan``, ``inf``, a negative
count or a 30-digit number is one line naming the argument (exit 2) rather than a
traceback or a wait that never ends. The master checks them again (its own bounds, in
the commands); these types only keep the CLI itself out of trouble.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn

from saltmarsh.protocol.bounds import MAX_INTERVAL

from .output import clean

# The longest wait the protocol carries (Interval, on every job): a larger one is refused by the master.
MAX_SECONDS = MAX_INTERVAL
MAX_INT = 2**53  # beyond this a number is no count anyone means (and JSON readers lose precision)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        """Print ``saltmarsh CMD: MESSAGE (see --help)`` and exit 2."""
        sys.stderr.write(f"{self.prog}: {clean(message)} (see {self.prog} --help)\n")
        sys.exit(2)


def seconds(limit: float = MAX_SECONDS) -> Callable[[str], float]:
    """An argument type: a finite number of seconds, more than 0 and at most ``limit``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 < value <= limit):
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0 and at most {limit:.0f}")
        return value

    return parse


def absolute_path(text: str) -> str:
    """An argument type: an absolute path of printable characters (at most 1024)."""
    if not text.startswith("/") or len(text) > 1024 or not text.isprintable():
        raise argparse.ArgumentTypeError("an absolute path of printable characters (at most 1024) is wanted")
    return text


def integer(low: int, high: int = MAX_INT) -> Callable[[str], int]:
    """An argument type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is less than {low}")
        if value > high:
            raise argparse.ArgumentTypeError(f"{value} is more than {high}")
        return value

    return parse


def labels(text: str) -> dict[str, str]:
    """An argument type: ``k=v[,k=v]`` labels."""
    from saltmarsh.protocol.targeting import parse_labels  # with the message schemas: only when used

    try:
        return parse_labels(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc



def target_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """An optional TARGET (``what`` is its help), with -L (an id list) and -l (labels)."""
    parser.add_argument("-L", "--list", dest="as_list", action="store_true", help="TARGET is a comma-separated id list")
    parser.add_argument("-l", "--labels", dest="as_labels", action="store_true", help="TARGET is key=value,... labels")
    parser.add_argument("target", nargs="?", default=None, help=what)
