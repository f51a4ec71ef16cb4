"""``event.send``: fire an event from the agent onto the master's bus."""

from __future__ import annotations

from typing import Any

from . import FunctionContext, function


@function("event.send")
def send(ctx: FunctionContext, tag: str, data: Any = None) -> bool:
    """Fire ``tag`` with ``data``; tags under saltmarsh/ must be this agent's own subtree."""
    ctx.fire_event(tag, data)
    return True
