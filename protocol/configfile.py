"""Load a daemon's YAML config file into its typed config class, once, at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import yaml

from .errors import ConfigError

C = TypeVar("C")


def load_yaml_config(path: Path, kind: type[C]) -> C:
    """Parse ``path`` into ``kind``; a missing file means every default.

    Unknown keys and values of the wrong type raise ConfigError naming the file
    and the key, so a typo is a start-up error rather than a silent default.
    """
    raw: Any = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot be read as YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys to values")
    try:
        return msgspec.convert(raw, type=kind, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def resolve_dir(config_dir: Path, value: str) -> Path:
    """A relative directory in a config file is relative to the config directory."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (config_dir / path).resolve()


Port = Annotated[int, msgspec.Meta(gt=0, lt=65536)]
LogLevel = Literal["debug", "info", "warning", "error"]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
