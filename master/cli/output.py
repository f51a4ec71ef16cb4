"""How the CLI prints: YAML-like blocks for people, JSON for programs, one line per failure.

Anything that came from an agent (results, error messages, VM names and fields, event tags
and data) is untrusted text. Human-readable output passes it through ``clean``, which
escapes every character that is not printable (newlines, ANSI escapes, other control and
format characters), so an agent can neither colour nor move the terminal nor print a line
that looks like another agent's (a forged job return). ``--json`` needs no such care:
json.dumps escapes control characters itself, and the output stays valid JSON.
"""

from __future__ import annotations

import math
import re
import sys

# typing costs every CLI start some 2 ms and only the type checker needs it (it reads this name as True).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def clean(value: object) -> str:
    """``value`` as one line of text that is safe on a terminal: non-printable characters escaped.

    "Printable" is Python's own rule (str.isprintable, as repr uses it): control and format
    characters (C0, DEL, C1, bidi overrides), line and paragraph separators and unusual
    spaces are shown as ``\\n``, ``\\x1b``, ``\\u202e``; everything else, accents included, is kept.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _json_key(key: Any) -> str:
    """A map key as JSON writes it (1 -> "1", True -> "true"), so keys of mixed types still sort."""
    import json

    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | int) or (isinstance(key, float) and math.isfinite(key)):
        return json.dumps(key)
    return repr(key)


def json_safe(data: Any) -> Any:
    """``data`` as strict JSON can hold it: NaN and infinities as strings ("nan", "inf"), map keys as strings.

    json.dumps would write NaN and Infinity bare, which no strict JSON reader accepts, and fail
    to sort a map whose keys mix types; msgpack carries both from any agent that returns them.
    """
    if isinstance(data, float) and not math.isfinite(data):
        return repr(data)
    if isinstance(data, dict):
        return {_json_key(key): json_safe(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [json_safe(value) for value in data]
    return data


def print_json(data: Any) -> None:
    """Print ``data`` as one JSON document."""
    import json

    json.dump(json_safe(data), sys.stdout, indent=2, sort_keys=True, default=repr)
    sys.stdout.write("\n")


def fail(message: object) -> None:
    """Print ``saltmarsh: MESSAGE`` as one line on stderr."""
    print(f"saltmarsh: {clean(message)}", file=sys.stderr)


def block(data: Any, indent: int = 4) -> str:
    """``data`` as an indented YAML block (scalars on one line), each line cleaned.

    YAML already quotes and escapes most control characters, but it passes some through
    (bidi overrides) and breaks lines at others (U+2028, U+0085); cleaning each line of its
    output covers both, and every line stays indented under its agent's name.
    """
    if data is None or isinstance(data, bool | int):
        # What yaml.safe_dump writes for these ("true", "null", "5"), without importing yaml (20 ms
        # of start-up) for the answer of a ping.
        return " " * indent + ("null" if data is None else str(data).lower() if isinstance(data, bool) else str(data))
    import yaml

    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=True, allow_unicode=True).rstrip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    pad = " " * indent
    return "\n".join(pad + clean(line) for line in text.splitlines())


# Words YAML reads as plain numbers and strings, told apart without importing yaml: a decimal
# integer without a leading zero (YAML 1.1 reads 017 as octal), and a word of letters, digits and
# ``_ . / -`` that starts with a letter and is none of YAML's null and boolean words.
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_./-]*\Z")
_YAML_WORDS = frozenset(("null", "true", "false", "yes", "no", "on", "off"))


def parse_value(text: str) -> Any:
    """Turn a command-line word into a value the way YAML reads it (1 -> int, true -> bool)."""
    if _DECIMAL.match(text):
        return int(text)
    if _WORD.match(text) and text.lower() not in _YAML_WORDS:
        return text
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
