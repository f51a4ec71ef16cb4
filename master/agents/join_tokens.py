"""One-time join tokens: ``saltmarsh key token ID`` lets that one agent's key be accepted on first contact.

Only a hash of each token is stored. A token is bound to one agent id, expires,
and is spent by its first use; anything else is refused with a logged reason.

An agent that joined by token is a *guest* (a seeded VM's own agent): it runs jobs
but is not a hypervisor, so it never shows in ``virt host-info`` nor becomes a
placement candidate, until the operator says it is one (``saltmarsh host role ID
hypervisor``). Anyone who reads a token can make an agent of that id; it must not
thereby get VMs placed on a machine the operator never chose.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from ..store.jobcache import JobCache

SCHEMA = """
CREATE TABLE IF NOT EXISTS join_tokens (
    digest TEXT PRIMARY KEY, agent_id TEXT NOT NULL, expires REAL NOT NULL, used REAL);
CREATE TABLE IF NOT EXISTS guests (agent_id TEXT PRIMARY KEY, joined REAL NOT NULL);
"""
DEFAULT_TTL = 3600.0


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Issues and redeems join tokens, kept (hashed) in the job cache's database."""

    def __init__(self, cache: JobCache) -> None:
        self._cache = cache
        cache.db.executescript(SCHEMA)
        self._guests = {row[0] for row in cache.db.execute("SELECT agent_id FROM guests")}

    def issue(self, agent_id: str, ttl: float = DEFAULT_TTL) -> tuple[str, float]:
        """A new token for ``agent_id``; returns (token, expiry time)."""
        token = secrets.token_urlsafe(24)
        expires = time.time() + ttl
        with self._cache.transaction() as db:
            db.execute("INSERT INTO join_tokens VALUES (?, ?, ?, NULL)", (_digest(token), agent_id, expires))
        return token, expires

    def redeem(self, agent_id: str, token: str) -> str:
        """Spend ``token`` for ``agent_id``; return "" on success, else the reason it was refused."""
        with self._cache.transaction() as db:
            row = db.execute("SELECT agent_id, expires, used FROM join_tokens WHERE digest = ?",
                             (_digest(token),)).fetchone()
            if row is None:
                return "unknown join token"
            owner, expires, used = row
            if owner != agent_id:
                return f"join token was issued for {owner}, not {agent_id}"
            if used is not None:
                return "join token was already used"
            if expires < time.time():
                return "join token expired"
            db.execute("UPDATE join_tokens SET used = ? WHERE digest = ?", (time.time(), _digest(token)))
        return ""

    def revoke(self, agent_id: str) -> int:
        """Revoke every unused token of ``agent_id`` (its VM is gone); return how many."""
        with self._cache.transaction() as db:
            cursor = db.execute("DELETE FROM join_tokens WHERE agent_id = ? AND used IS NULL", (agent_id,))
        return cursor.rowcount

    def mark_guest(self, agent_id: str) -> None:
        """``agent_id`` joined by token: a guest until the operator says it is a hypervisor."""
        with self._cache.transaction() as db:
            db.execute("INSERT OR REPLACE INTO guests VALUES (?, ?)", (agent_id, time.time()))
        self._guests.add(agent_id)

    def set_guest(self, agent_id: str, guest: bool) -> None:
        """Make ``agent_id`` a guest, or (False) a hypervisor; forgetting a deleted key is ``False`` too."""
        if guest:
            self.mark_guest(agent_id)
            return
        with self._cache.transaction() as db:
            db.execute("DELETE FROM guests WHERE agent_id = ?", (agent_id,))
        self._guests.discard(agent_id)

    def is_guest(self, agent_id: str) -> bool:
        """True if ``agent_id`` joined by token and was not made a hypervisor since."""
        return agent_id in self._guests
