"""The master's event bus: every change becomes an Event, delivered to matching subscribers.

Subscribers are plain callbacks run on the event loop (the control server
turns them into batched sends to local clients); the bus keeps no history, as
Salt's does not: what must survive a restart (jobs, returns) is in the job cache.

Matching is ``protocol.tags.tag_matches`` (a prefix, or a glob over the whole
tag), analysed once per subscription rather than once per event. Each
subscription is filed under the part of its pattern before any glob
character, cut back to the last ``/`` (``saltmarsh/job/<jid>/ret/``,
``saltmarsh/agent/`` for ``saltmarsh/agent/*/up``, ``""`` for ``*``). An event
then looks only at the groups filed under the ``/``-prefixes of its own tag,
and tests only what the group's prefix does not settle: every ``saltmarsh
run`` holds a subscription for its job's returns, and thousands of agent
events a second must not be tested against each of them.
"""

from __future__ import annotations

import fnmatch
import itertools
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from saltmarsh.protocol.targeting import GLOB_CHARS

# Defined with the control socket's messages, which carry it, so that a client reads events
# without importing the bus (and logging) itself.
from ..control.messages import Event as Event

log = logging.getLogger(__name__)


Callback = Callable[[Event], None]
Matcher = Callable[[str], bool]
# pattern, the test still needed once the group's prefix matched (None: nothing more), callback
Entry = tuple[str, Matcher | None, Callback]


def index_key(pattern: str) -> str:
    """The ``/``-ended literal start that every tag matching ``pattern`` begins with."""
    literal = pattern
    for i, char in enumerate(pattern):
        if char in GLOB_CHARS:
            literal = pattern[:i]
            break
    return literal[: literal.rfind("/") + 1]


def compile_pattern(pattern: str) -> Matcher | None:
    """What is left to test of ``tag_matches(pattern, tag)`` once the tag starts with index_key(pattern)."""
    if pattern == index_key(pattern):
        return None  # "" or a prefix ending in "/": the group lookup is the whole test
    if any(char in GLOB_CHARS for char in pattern):
        match = re.compile(fnmatch.translate(pattern)).match  # what fnmatch.fnmatchcase does
        return lambda tag: match(tag) is not None
    return lambda tag: tag.startswith(pattern)


class EventBus:
    """In-process publish/subscribe keyed by tag pattern (prefix or glob)."""

    def __init__(self) -> None:
        self._groups: dict[str, dict[int, Entry]] = {}
        self._keys: dict[int, str] = {}
        self._ids = itertools.count(1)
        self.published = 0

    def subscribe(self, pattern: str, callback: Callback) -> int:
        """Deliver events whose tag matches ``pattern`` to ``callback``; return a handle."""
        handle = next(self._ids)
        key = index_key(pattern)
        self._groups.setdefault(key, {})[handle] = (pattern, compile_pattern(pattern), callback)
        self._keys[handle] = key
        return handle

    def unsubscribe(self, handle: int) -> None:
        """Stop a subscription (unknown handles are ignored)."""
        key = self._keys.pop(handle, None)
        if key is None:
            return
        group = self._groups[key]
        del group[handle]
        if not group:
            del self._groups[key]

    @property
    def subscriptions(self) -> int:
        """How many subscriptions are live."""
        return len(self._keys)

    def fire(self, tag: str, data: Any = None, *, agent: str = "", ts: float | None = None) -> Event:
        """Publish one event to every matching subscriber."""
        event = Event(tag, data, time.time() if ts is None else ts, agent)
        self.published += 1
        if self._groups:
            for pattern, callback in self._matching(tag):
                try:
                    callback(event)
                except Exception:  # a broken subscriber must not stop the others
                    log.exception("event subscriber for %r failed on %s", pattern, tag)
        return event

    def _matching(self, tag: str) -> list[tuple[str, Callback]]:
        """Subscribers of ``tag``, collected before any runs (a callback may unsubscribe)."""
        found: list[tuple[str, Callback]] = []
        groups = self._groups
        end = -1
        while True:
            group = groups.get(tag[: end + 1])
            if group:
                found.extend((pattern, cb) for pattern, test, cb in group.values() if test is None or test(tag))
            end = tag.find("/", end + 1)
            if end < 0:
                return found
