"""API tokens: bearer tokens with scopes, an optional target pattern and an expiry, stored hashed.

Only the SHA-256 of a token is kept (a token is 256 random bits: nothing to brute-force, so no slow
hash is needed), in the job cache's SQLite database, so a master restart keeps them
(saltstack/salt#49993 lost them). The table is read once at start and kept in memory beside it:
a revocation through this master takes effect at the next request.
"""

from __future__ import annotations

import fnmatch
import hashlib
import secrets
import time
from dataclasses import dataclass

from ..service.errors import Conflict, Invalid, NotFound
from ..store.jobcache import JobCache

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_tokens (
    name TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL, target TEXT NOT NULL,
    created REAL NOT NULL, expires REAL);
"""
PREFIX = "smt_"  # so a leaked token is recognisable in a log or a repository scan
MAX_NAME = 64


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ApiToken:
    """One token as stored: never the token itself."""

    name: str
    scopes: tuple[str, ...]
    target: str  # a glob of agent ids the token may reach; "" for any
    created: float
    expires: float | None

    def expired(self, now: float) -> bool:
        """Whether the token is past its expiry at ``now``."""
        return self.expires is not None and now >= self.expires

    def may_reach(self, agent_id: str) -> bool:
        """Whether the token's target pattern admits ``agent_id``."""
        return not self.target or fnmatch.fnmatchcase(agent_id, self.target)


class Unauthenticated(Exception):
    """No valid token: the reason goes into the 401 answer and the log (never the token)."""


class ApiTokens:
    """Creates, lists, revokes and checks API tokens."""

    def __init__(self, cache: JobCache) -> None:
        self._cache = cache
        cache.db.executescript(SCHEMA)
        self._by_digest: dict[str, ApiToken] = {}
        for name, digest, scopes, target, created, expires in cache.db.execute(
                "SELECT name, digest, scopes, target, created, expires FROM api_tokens"):
            self._by_digest[digest] = ApiToken(name, tuple(scopes.split(",")), target, created, expires)

    def create(self, name: str, scopes: tuple[str, ...], target: str = "",
               ttl: float | None = None) -> tuple[str, ApiToken]:
        """A new token named ``name``; returns (the token, shown once, and its record)."""
        if not name or len(name) > MAX_NAME or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise Invalid(f"a token name is 1-{MAX_NAME} letters, digits, '-', '_' or '.' (got {name!r})")
        if any(record.name == name for record in self._by_digest.values()):
            raise Conflict(f"a token named {name} exists already (revoke it first)")
        token = PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        record = ApiToken(name, scopes, target, now, None if ttl is None else now + ttl)
        with self._cache.transaction() as db:
            db.execute("INSERT INTO api_tokens VALUES (?, ?, ?, ?, ?, ?)",
                       (name, _digest(token), ",".join(scopes), target, now, record.expires))
        self._by_digest[_digest(token)] = record
        return token, record

    def list(self) -> list[ApiToken]:
        """Every token, by name."""
        return sorted(self._by_digest.values(), key=lambda record: record.name)

    def revoke(self, name: str) -> ApiToken:
        """Remove the token ``name``; NotFound if there is none."""
        for digest, record in list(self._by_digest.items()):
            if record.name == name:
                with self._cache.transaction() as db:
                    db.execute("DELETE FROM api_tokens WHERE name = ?", (name,))
                del self._by_digest[digest]
                return record
        raise NotFound(f"no token named {name}")

    def authenticate(self, header: str | None) -> ApiToken:
        """The token an ``Authorization: Bearer …`` header carries; Unauthenticated with the reason."""
        if not header:
            raise Unauthenticated("no Authorization header (want: Bearer TOKEN)")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header is not 'Bearer TOKEN'")
        record = self._by_digest.get(_digest(token.strip()))
        if record is None:
            raise Unauthenticated("unknown or revoked token")
        if record.expired(time.time()):
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.expires or 0))
            raise Unauthenticated(f"token {record.name} expired at {when}")
        return record
