"""Secret fields: which keys of job arguments, returns and events hold secrets, and their redaction.

Job kwargs and function results are free-form maps, so a secret is marked by
its key, once, here: a new VM's one-time ``join_token`` in ``virt.init``'s
kwargs, a VNC console's ``password`` (libvirt's ``passwd``) in ``virt.init``
and ``virt.get_graphics`` results. The master stores and shows jobs, returns
and events only redacted (the job cache is a record, not a secret store, and
``saltmarsh events`` is anyone's with the control socket); the one command
that needs a secret (``virt vnc NAME``) gets it from the live return.
"""

from __future__ import annotations

from typing import Any

SECRET_KEYS = frozenset({"join_token", "password", "passwd", "token", "secret"})
REDACTED = "<redacted>"
# Deep enough for any result we make; deeper parts are dropped rather than walked without bound.
MAX_DEPTH = 32


def is_secret_key(key: object) -> bool:
    """True if a map entry under ``key`` holds a secret."""
    return isinstance(key, str) and key.lower() in SECRET_KEYS


def _secret_entry(key: object, value: Any) -> bool:
    """A map entry to redact: a secret key holding something (an empty one hides nothing)."""
    return is_secret_key(key) and value not in (None, "")


def redact(value: Any, _depth: int = 0) -> Any:
    """``value`` with every secret entry, at any depth, replaced by ``REDACTED`` (a new object)."""
    if _depth > MAX_DEPTH:
        return REDACTED
    if isinstance(value, dict):
        return {k: REDACTED if _secret_entry(k, v) else redact(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, _depth + 1) for v in value]
    return value


def holds_secret(value: Any, _depth: int = 0) -> bool:
    """True if ``value`` has a secret entry anywhere (so that redacting it changes something)."""
    if _depth > MAX_DEPTH:
        return True
    if isinstance(value, dict):
        return any(_secret_entry(k, v) or holds_secret(v, _depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(holds_secret(v, _depth + 1) for v in value)
    return False
