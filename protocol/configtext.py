"""The stdlib-only half of reading a config file: flat ``key: value`` files, and relative directories.

Apart from protocol/configfile.py (which needs msgspec for the typed schema) so that the CLI's fast
path (master/cli/fast.py) can find the control socket in master.yaml without importing msgspec or
PyYAML; configfile.py uses the same functions, so a file reads the same on both paths.
"""

from __future__ import annotations

import re
from pathlib import Path

# typing costs every CLI start some 2 ms and only the type checker needs it (it reads this name as True).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The flat files most configs are (``key: value`` lines, as yaml.safe_dump writes them), read
# without PyYAML. A value is taken only where YAML 1.1 (PyYAML's safe loader) reads it the same:
# a decimal integer without a leading zero (017 is octal there), a decimal with digits on both
# sides of its point, true or false in lower case, a word that starts with a letter or "/" and is
# none of YAML's null and boolean words (yes, off, …), digits in three or more dotted groups (an
# address: neither a number nor a date there), or a single-quoted string without a quote in it.
# Anything else (nesting, lists, comments after a value, flow style, anchors, other spellings)
# leaves the whole file to PyYAML.
_SIMPLE_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*): (.+)")
_SIMPLE_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_SIMPLE_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+")
_SIMPLE_WORD = re.compile(r"[A-Za-z/][A-Za-z0-9_./-]*")
_SIMPLE_DOTTED = re.compile(r"[0-9]+(?:\.[0-9]+){2,}")
_SIMPLE_QUOTED = re.compile(r"'([^']*)'")
_YAML_WORDS = frozenset(("null", "true", "false", "yes", "no", "on", "off", "y", "n"))


def read_simple_yaml(text: str) -> dict[str, Any] | None:
    """``text`` as PyYAML's safe loader reads it, if it is a flat file of simple ``key: value`` lines; else None."""
    document: dict[str, Any] = {}
    for raw in text.splitlines():
        line = raw.rstrip(" ")
        if not line or line.startswith("#"):
            continue
        match = _SIMPLE_LINE.fullmatch(line)
        value = _simple_value(match.group(2)) if match else None
        if match is None or value is None:
            return None
        document[match.group(1)] = value[0]
    return document


def _simple_value(text: str) -> tuple[Any] | None:
    """(the value,) of a simple scalar, or None if it is not one of the simple forms."""
    if _SIMPLE_INT.fullmatch(text):
        try:
            return (int(text),)
        except ValueError:  # past Python's digit limit: PyYAML fails on it too, and says so in our words
            return None
    if _SIMPLE_FLOAT.fullmatch(text):
        return (float(text),)
    if text in ("true", "false"):
        return (text == "true",)
    if (_SIMPLE_WORD.fullmatch(text) and text.lower() not in _YAML_WORDS) or _SIMPLE_DOTTED.fullmatch(text):
        return (text,)
    quoted = _SIMPLE_QUOTED.fullmatch(text)
    return (quoted.group(1),) if quoted else None


def resolve_dir(config_dir: Path, value: str) -> Path:
    """A relative directory in a config file is relative to the config directory."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (config_dir / path).resolve()
