"""How a command reaches the master, imported only by the commands that do.

The client pulls in pyzmq and msgspec, and reading master.yaml pulls in the config schema: a
command that only parses its words (``--help``, a usage error) pays for none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

R = TypeVar("R")

if TYPE_CHECKING:
    from pathlib import Path

    from ..control.client import MasterClient


def connect(config_dir: Path, reply_timeout: float | None = None) -> MasterClient:
    """A client of the master configured in ``config_dir`` (NotRunning if none listens there).

    ``reply_timeout`` None keeps the client's own default.
    """
    from ..control.client import DEFAULT_REPLY_TIMEOUT, MasterClient

    return MasterClient.from_config_dir(config_dir, DEFAULT_REPLY_TIMEOUT if reply_timeout is None else reply_timeout)


def given(kind: type[R], **fields: Any) -> R:
    """A typed request of ``kind`` from the options the operator gave: one left out (None) keeps the
    request's own default (master/service/types/), so the CLI never writes a default of its own."""
    return kind(**{name: value for name, value in fields.items() if value is not None})
