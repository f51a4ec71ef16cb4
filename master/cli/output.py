"""How the CLI prints: YAML-like blocks for people, JSON for programs."""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml


def print_json(data: Any) -> None:
    """Print ``data`` as one JSON document."""
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=repr)
    sys.stdout.write("\n")


def block(data: Any, indent: int = 4) -> str:
    """``data`` as an indented YAML block (scalars on one line)."""
    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=True, allow_unicode=True).rstrip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    pad = " " * indent
    return "\n".join(pad + line for line in text.splitlines())


def parse_value(text: str) -> Any:
    """Turn a command-line word into a value the way YAML reads it (1 -> int, true -> bool)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
