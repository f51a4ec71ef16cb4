"""What an API token may do: scopes ``resource:verb``, and an optional target pattern.

A token's scopes are fixed at creation; each route names the one scope it needs, and a request
outside them is refused with 403 naming that scope. ``write`` does not imply ``read``: a token
gets exactly what it lists (a monitoring token with ``metrics:read`` reads nothing else).
"""

from __future__ import annotations

RESOURCES = ("agents", "keys", "jobs", "vms", "images", "pki", "events", "metrics", "tokens")
VERBS = ("read", "write", "run")
# The scopes that exist; "jobs:run" starts jobs (one, or a batch), "jobs:write" kills them,
# "<resource>:write" changes that resource; "hosts:write" sets hosts up and puts them in maintenance
# (what hosts are is read with vms:read).
SCOPES = frozenset({f"{resource}:read" for resource in RESOURCES}
                   | {f"{resource}:write" for resource in ("agents", "keys", "vms", "hosts", "tokens")}
                   | {"jobs:run", "jobs:write"})


class ScopeError(ValueError):
    """A scope list names a scope that does not exist."""


def parse_scopes(text: str) -> tuple[str, ...]:
    """``jobs:run,vms:read`` as a sorted tuple; ScopeError naming any unknown scope."""
    scopes = sorted({part.strip() for part in text.split(",") if part.strip()})
    if not scopes:
        raise ScopeError("a token needs at least one scope")
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise ScopeError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(SCOPES))}")
    return tuple(scopes)
