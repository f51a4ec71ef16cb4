"""Load a daemon's YAML config file into its typed config class, once, at start-up."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec
import msgspec.inspect

# Written in configtext (stdlib-only, for the CLI's fast path); read and resolved the same here.
from .configtext import read_simple_yaml as read_simple_yaml
from .configtext import resolve_dir as resolve_dir
from .errors import ConfigError

if TYPE_CHECKING:
    pass

C = TypeVar("C")

# msgspec.convert checks the bounds a field declares but lets an unbounded (or lower-bounded-only) int
# through at any size, and such a value fails later, deep inside ZeroMQ or SQLite. Every int a config
# holds must fit the 64-bit integers those take.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def check_config_dir(config_dir: Path, file_name: str) -> None:
    """ConfigError unless ``config_dir`` is an existing directory: a mistyped ``-c`` must not mean every default."""
    if not config_dir.exists():
        raise ConfigError(f"config directory {config_dir} does not exist")
    if not config_dir.is_dir():
        raise ConfigError(f"{config_dir} is not a directory (-c names the directory that holds {file_name})")


def load_yaml_config(path: Path, kind: type[C]) -> C:
    """Parse ``path`` into ``kind``; a missing file means every default.

    Unknown keys, values of the wrong type or out of range, and a file that
    cannot be read or parsed raise ConfigError: one line naming the file (and
    the key), so a typo is a start-up error rather than a silent default.
    """
    raw = _read_yaml(path) if os.path.lexists(path) else {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys to values")
    _check_numbers(path, raw, "$")
    _check_keys(path, raw, msgspec.inspect.type_info(kind), "$")
    try:
        return msgspec.convert(raw, type=kind, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _check_keys(path: Path, value: Any, info: msgspec.inspect.Type, where: str) -> None:
    """ConfigError naming the first key that no setting has, at any depth of nested settings.

    msgspec refuses unknown fields too, but in its own words; the key a typo made is named in ours.
    """
    if isinstance(info, msgspec.inspect.UnionType):
        for member in info.types:
            _check_keys(path, value, member, where)
        return
    if not isinstance(info, msgspec.inspect.StructType) or not isinstance(value, dict):
        return
    fields = {f.encode_name: f for f in info.fields}
    for key, item in value.items():
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            raise ConfigError(f"{path}: unknown key `{where}.{key}`")
        _check_keys(path, item, field.type, f"{where}.{key}")


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    simple = read_simple_yaml(text)
    if simple is not None:
        return simple
    import yaml  # only for a file the simple reader leaves to it: 10 ms of every CLI start otherwise

    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(exc)}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: nested too deeply") from exc
    except ValueError as exc:  # a value PyYAML cannot build, e.g. an integer of thousands of digits
        raise ConfigError(f"{path}: a value cannot be read: {_one_line(exc)}") from exc


def _one_line(exc: Exception) -> str:
    """PyYAML's messages span lines (problem, context, a caret under the column); start-up errors are one."""
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{exc.problem}{where}"
    return " ".join(str(exc).split())


def _check_numbers(path: Path, value: Any, where: str) -> None:
    """ConfigError for an int outside 64 bits or a float that is not finite, anywhere in the document."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(path, item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_numbers(path, item, f"{where}[{index}]")
    elif isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        raise ConfigError(f"{path}: `{where}`: integer out of range (at most {INT_MAX})")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: `{where}`: must be a finite number")


Port = Annotated[int, msgspec.Meta(gt=0, lt=65536)]
LogLevel = Literal["debug", "info", "warning", "error"]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
