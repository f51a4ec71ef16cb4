"""Control commands, one module per family, registered by the ``command`` decorator.

A command is an async function ``(ctx, args) -> result``; its docstring is its
help. It raises CommandError for anything the operator must be told, and the
control server turns that into an error reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ..errors import CommandError

if TYPE_CHECKING:
    from ..server import Master

A = TypeVar("A")


@dataclass
class CommandContext:
    """What a command may use: the running master and the client's stream."""

    master: Master
    # Stream events matching a pattern to this client under this request's id; a stream given
    # seconds ends by itself then (a backstop for a client that never says stream.end).
    subscribe: Callable[[str, float | None], None]
    end_stream: Callable[[int], None]  # end this client's stream of that request id


# How long a command's stream outlives the caller's own wait when the caller never ends it.
STREAM_GRACE_SECONDS = 5.0

CommandFn = Callable[[CommandContext, dict[str, Any]], Awaitable[Any]]
COMMANDS: dict[str, CommandFn] = {}


def command(name: str) -> Callable[[CommandFn], CommandFn]:
    """Register an async function as control command ``name``."""

    def register(fn: CommandFn) -> CommandFn:
        COMMANDS[name] = fn
        return fn

    return register


def parse_args(args: dict[str, Any], kind: type[A]) -> A:
    """Convert a request's args into the command's typed argument Struct."""
    try:
        return msgspec.convert(args, type=kind)
    except msgspec.ValidationError as exc:
        raise CommandError(f"bad arguments: {exc}") from exc


def load_all() -> None:
    """Import every command module so that its commands register."""
    from . import agents, batch, events, host, jobs, keys, pki, virt  # noqa: F401
