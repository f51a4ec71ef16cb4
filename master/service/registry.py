"""The service's operations by command name, and what each call is given.

An operation is an async function ``(ctx, request) -> result`` registered for its request type
(``@operation(RunRequest)``); the request type's ``command`` is its name. Its docstring is its help.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .types import Request

if TYPE_CHECKING:
    from ..server import Master

R = TypeVar("R", bound=Request)

# Streams events whose tag matches a pattern to the caller, for ``seconds`` (None: until the caller
# ends it). A front end that streams nothing passes one that does nothing.
Watch = Callable[[str, "float | None"], None]

# How long a stream outlives the caller's own wait when the caller never ends it.
STREAM_GRACE_SECONDS = 5.0


def _no_watch(_pattern: str, _seconds: float | None) -> None:
    """A front end without streams: the caller only gets the result."""


@dataclass(frozen=True)
class ServiceContext:
    """What an operation may use: the running master, and the caller's event stream."""

    master: Master
    watch: Watch = _no_watch


@dataclass(frozen=True)
class Operation:
    """One operation: its request type and its function."""

    request: type[Request]
    run: Callable[[ServiceContext, Any], Awaitable[Any]]


OPERATIONS: dict[str, Operation] = {}


def operation(kind: type[R]) -> Callable[[Callable[[ServiceContext, R], Awaitable[Any]]],
                                         Callable[[ServiceContext, R], Awaitable[Any]]]:
    """Register an async function as the operation that answers requests of type ``kind``."""

    def register(fn: Callable[[ServiceContext, R], Awaitable[Any]]) -> Callable[[ServiceContext, R], Awaitable[Any]]:
        OPERATIONS[kind.command] = Operation(kind, fn)
        return fn

    return register


def load_all() -> None:
    """Import every domain module so that its operations register."""
    from . import agents, batches, events, hosts, images, jobs, keys, pki, vms  # noqa: F401
