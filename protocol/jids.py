"""Job ids: 20 digits of UTC time (YYYYmmddHHMMSSffffff), strictly increasing per process."""

from __future__ import annotations

import datetime
import threading

_lock = threading.Lock()
_last = 0


def new_jid(now: datetime.datetime | None = None) -> str:
    """Return a new time-ordered jid; never the same twice in one process."""
    global _last
    moment = now or datetime.datetime.now(datetime.UTC)
    candidate = int(moment.strftime("%Y%m%d%H%M%S%f"))
    with _lock:
        _last = max(candidate, _last + 1)
        return str(_last)


def jid_time(jid: str) -> datetime.datetime:
    """The UTC time a jid was made."""
    return datetime.datetime.strptime(jid[:20], "%Y%m%d%H%M%S%f").replace(tzinfo=datetime.UTC)
