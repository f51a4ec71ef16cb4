"""The job cache in SQLite: jobs, the agents each job expects, returns, agent presence, relayed event ids.

Writes happen before the master acknowledges a return (or an events batch), so a return that an
agent saw acknowledged survives a master crash (WAL, synchronous=NORMAL:
durable across a process kill; a power cut may lose the last commits).
Blobs are msgpack.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saltmarsh.protocol.codec import decode, encode, to_builtins
from saltmarsh.protocol.messages import Job, JobReturn, Target

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    jid TEXT PRIMARY KEY, fun TEXT NOT NULL, target BLOB NOT NULL, args BLOB NOT NULL,
    kwargs BLOB NOT NULL, timeout REAL NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS expected (
    jid TEXT NOT NULL, agent_id TEXT NOT NULL, PRIMARY KEY (jid, agent_id));
CREATE TABLE IF NOT EXISTS returns (
    jid TEXT NOT NULL, agent_id TEXT NOT NULL, ret BLOB NOT NULL, received REAL NOT NULL,
    PRIMARY KEY (jid, agent_id));
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY, labels BLOB NOT NULL, version TEXT NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, down_since REAL);
CREATE TABLE IF NOT EXISTS event_marks (
    agent_id TEXT PRIMARY KEY, stream INTEGER NOT NULL, mark INTEGER NOT NULL, above BLOB NOT NULL);
"""


# What storing one agent's returns gave: the returns that were new, and jids it was never sent.
ReturnsAdded = tuple[list[JobReturn], list[str]]


@dataclass(frozen=True)
class JobRecord:
    """A job as stored, with who was expected to answer."""

    job: Job
    created: float
    expected: list[str]


@dataclass(frozen=True)
class AgentRecord:
    """What the master remembers of an agent between restarts."""

    agent_id: str
    labels: dict[str, str]
    version: str
    first_seen: float
    last_seen: float
    down_since: float | None


class JobCache:
    """SQLite-backed store of jobs, returns and agent presence."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for other stores that keep their tables in the same file (the inventory)."""
        return self._db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic transaction (the connection autocommits otherwise)."""
        with self._db:
            self._db.execute("BEGIN")
            yield self._db

    def add_job(self, job: Job, expected: list[str]) -> None:
        """Record a job and the agents expected to answer it, in one transaction."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job.jid, job.fun, encode(job.target), encode(job.args), encode(job.kwargs),
                 job.timeout, time.time()),
            )
            self._db.executemany("INSERT INTO expected VALUES (?, ?)", [(job.jid, a) for a in expected])

    def add_returns(self, agent_id: str, returns: list[JobReturn]) -> ReturnsAdded:
        """Store returns; give back (those that were new, jids this agent was never sent).

        A duplicate (jid, agent) is ignored; a return for a job that did not expect
        this agent is refused, so no agent can write into another job's record.
        """
        return self.add_returns_many([(agent_id, returns)])[0]

    def add_returns_many(self, batches: list[tuple[str, list[JobReturn]]]) -> list[ReturnsAdded]:
        """``add_returns`` for several agents' batches, in one transaction (master/jobs/groupcommit.py)."""
        now = time.time()
        with self.transaction():
            return [self._add_returns(agent_id, returns, now) for agent_id, returns in batches]

    def _add_returns(self, agent_id: str, returns: list[JobReturn], now: float) -> ReturnsAdded:
        fresh: list[JobReturn] = []
        unexpected: list[str] = []
        for ret in returns:
            if self._db.execute("SELECT 1 FROM expected WHERE jid = ? AND agent_id = ?",
                                (ret.jid, agent_id)).fetchone() is None:
                unexpected.append(ret.jid)
                continue
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO returns VALUES (?, ?, ?, ?)", (ret.jid, agent_id, encode(ret), now)
            )
            if cursor.rowcount:
                fresh.append(ret)
        return fresh, unexpected

    def get_job(self, jid: str) -> JobRecord | None:
        """The job ``jid`` with its expected agents, or None."""
        row = self._db.execute("SELECT * FROM jobs WHERE jid = ?", (jid,)).fetchone()
        if row is None:
            return None
        rows = self._db.execute("SELECT agent_id FROM expected WHERE jid = ? ORDER BY agent_id", (jid,))
        expected = [r[0] for r in rows]
        return JobRecord(_job_from_row(row), row[6], expected)

    def returns(self, jid: str) -> dict[str, JobReturn]:
        """Every stored return of ``jid`` by agent id."""
        rows = self._db.execute("SELECT agent_id, ret FROM returns WHERE jid = ? ORDER BY agent_id", (jid,))
        return {agent: decode(blob, JobReturn, "stored return") for agent, blob in rows}

    def list_jobs(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` jobs with counts of expected agents and returns."""
        rows = self._db.execute(
            """SELECT j.jid, j.fun, j.target, j.created,
                      (SELECT COUNT(*) FROM expected e WHERE e.jid = j.jid),
                      (SELECT COUNT(*) FROM returns r WHERE r.jid = j.jid)
               FROM jobs j ORDER BY j.jid DESC LIMIT ?""",
            (limit,),
        )
        return [
            {"jid": jid, "fun": fun, "target": to_builtins(decode(target, Target)), "created": created,
             "expected": n_expected, "returned": n_returned}
            for jid, fun, target, created, n_expected, n_returned in rows
        ]

    def purge_older_than(self, hours: float) -> int:
        """Delete jobs (and their returns) older than ``hours``; return how many jobs went."""
        cutoff = time.time() - hours * 3600
        with self.transaction():
            old = [r[0] for r in self._db.execute("SELECT jid FROM jobs WHERE created < ?", (cutoff,))]
            for table in ("returns", "expected", "jobs"):
                self._db.executemany(f"DELETE FROM {table} WHERE jid = ?", [(j,) for j in old])
        return len(old)

    def save_agent(self, record: AgentRecord) -> None:
        """Insert or update what is known of an agent."""
        self._db.execute(
            "INSERT OR REPLACE INTO agents VALUES (?, ?, ?, ?, ?, ?)",
            (record.agent_id, encode(record.labels), record.version, record.first_seen,
             record.last_seen, record.down_since),
        )

    def save_last_seen(self, seen: dict[str, float]) -> None:
        """Update last_seen of many agents in one transaction."""
        with self.transaction():
            self._db.executemany(
                "UPDATE agents SET last_seen = ? WHERE agent_id = ?", [(t, a) for a, t in seen.items()]
            )

    def forget_agent(self, agent_id: str) -> None:
        """Drop an agent's presence record (its key was deleted)."""
        self._db.execute("DELETE FROM agents WHERE agent_id = ?", (agent_id,))

    def event_marks(self, agent_id: str) -> tuple[int, int, list[int]] | None:
        """(stream, mark, ids above the mark) of the agent's events relayed so far, if any (agent_events.py)."""
        row = self._db.execute("SELECT stream, mark, above FROM event_marks WHERE agent_id = ?", (agent_id,)).fetchone()
        if row is None:
            return None
        return int(row[0]), int(row[1]), decode(row[2], list[int], "stored event marks")

    def save_event_marks(self, agent_id: str, stream: int, mark: int, above: list[int]) -> None:
        """Record which of the agent's events were relayed (one statement: written before the Ack)."""
        self._db.execute("INSERT OR REPLACE INTO event_marks VALUES (?, ?, ?, ?)",
                         (agent_id, stream, mark, encode(above)))

    def agents(self) -> list[AgentRecord]:
        """Every remembered agent."""
        rows = self._db.execute("SELECT * FROM agents ORDER BY agent_id")
        return [
            AgentRecord(a, decode(labels, dict[str, str]), v, first, last, down)
            for a, labels, v, first, last, down in rows
        ]


def _job_from_row(row: tuple[Any, ...]) -> Job:
    jid, fun, target, args, kwargs, timeout, _created = row
    return Job(
        jid=jid, fun=fun, target=decode(target, Target), args=decode(args, list[Any]),
        kwargs=decode(kwargs, dict[str, Any]), timeout=timeout,
    )


__all__ = ["AgentRecord", "JobCache", "JobRecord", "ReturnsAdded"]
