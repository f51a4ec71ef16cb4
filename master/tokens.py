"""One-time join tokens: ``saltmarsh key token ID`` lets that one agent's key be accepted on first contact.

Only a hash of each token is stored. A token is bound to one agent id, expires,
and is spent by its first use; anything else is refused with a logged reason.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from .jobcache import JobCache

SCHEMA = """
CREATE TABLE IF NOT EXISTS join_tokens (
    digest TEXT PRIMARY KEY, agent_id TEXT NOT NULL, expires REAL NOT NULL, used REAL);
"""
DEFAULT_TTL = 3600.0


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Issues and redeems join tokens, kept (hashed) in the job cache's database."""

    def __init__(self, cache: JobCache) -> None:
        self._cache = cache
        cache.db.executescript(SCHEMA)

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
