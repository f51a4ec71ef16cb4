"""``event.send``: fire an event from the agent onto the master's bus."""

from __future__ import annotations

from typing import Any

from saltmarsh.protocol.tags import tag_fault

from ..errors import FunctionError
from . import FunctionContext, function


@function("event.send", quick=True)
def send(ctx: FunctionContext, tag: str, data: Any = None) -> bool:
    """Fire ``tag`` with ``data``; tags under saltmarsh/ must be this agent's own subtree.

    A malformed tag (a control character, a space, too long) fails the job here, with the
    reason, instead of going out to be refused by the master out of the caller's sight.
    """
    fault = tag_fault(tag)
    if fault:
        raise FunctionError(f"event.send refused the tag: {fault}")
    ctx.fire_event(tag, data)
    return True
