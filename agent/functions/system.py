"""``sys.*``: what this agent can do."""

from __future__ import annotations

import inspect

from ..errors import FunctionError
from . import REGISTRY, FunctionContext, function, usage


@function("sys.list_functions", quick=True)
def list_functions(ctx: FunctionContext) -> list[str]:
    """Every function this agent runs, sorted."""
    return sorted(REGISTRY)


@function("sys.doc", quick=True)
def doc(ctx: FunctionContext, name: str = "") -> dict[str, str]:
    """Usage and docstring of one function, of a family (``test``), or of all."""
    names = [n for n in sorted(REGISTRY) if not name or n == name or n.startswith(name + ".")]
    if not names:
        raise FunctionError(f"no function or family {name!r}")
    return {n: f"{n}{usage(n)}\n{inspect.getdoc(REGISTRY[n]) or ''}".strip() for n in names}
