"""The agent's spool on disk: returns until acknowledged, events not sent yet, and the job journal.

One SQLite file (AgentConfig.spool_path, ``<root_dir>/spool.sqlite``) (mode 0600: results may hold secrets), in WAL
mode with synchronous=NORMAL: a commit is in the WAL file before COMMIT returns, so it
survives the agent being killed (kill -9, OOM); a power cut may lose the last commits but
cannot corrupt the file. That is the same promise as the master's job cache.

Why SQLite rather than append-only files: rows leave the spool out of order (the master
acknowledges returns by jid, and event batches whenever their replies come), the bounds
drop rows at the head while new rows go on at the tail, and the journal is looked up by
jid. With files that takes a log, a compaction scheme and a recovery scan for a torn last
record; here each is one indexed statement in a transaction.

Tables:

- ``jobs``, the journal: a jid is written before its job runs, and ``finished`` is set in
  the transaction that spools its return. A jid found here is never run again; one found
  unfinished at start was cut short by the agent stopping, and gets a failed return
  (error type ``Interrupted``) instead of silence.
- ``returns``: written before they are sent, deleted only when the master acknowledges them.
- ``events``: events that could not be sent when fired (master away, or a backlog), keyed by
  their id so that they read back in firing order.
- ``meta``: the stream id (random, made with the file) and the epoch (one more at every
  start). Event ids are ``epoch << EPOCH_SHIFT | n``: they ascend across restarts without a
  write per event, and a new file (new stream) tells the master that ids started again.

Each bound (``spool_max_events``, ``spool_max_returns`` in agent.yaml) drops the oldest
rows, with a logged count, only when it is hit. Every method may be called from any thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from saltmarsh.protocol.codec import decode, encode
from saltmarsh.protocol.errors import MalformedFrame
from saltmarsh.protocol.messages import AgentEvent, ErrorInfo, JobReturn

from .errors import SpoolError

log = logging.getLogger(__name__)

EPOCH_SHIFT = 40  # 2**40 event ids per run of the agent; 2**23 runs before the stream starts anew
MAX_EPOCH = 2 ** (63 - EPOCH_SHIFT) - 1
# Finished jobs the journal remembers, to recognise a job seen again; far more than a job frame's
# freshness window can bring back, and a few hundred kB on disk.
KEEP_FINISHED_JOBS = 10_000
PRUNE_EVERY = 256
DROP_LOG_SECONDS = 10.0
INTERRUPTED = "Interrupted"
INTERRUPTED_MESSAGE = ("interrupted by an agent restart: the agent stopped while this job ran; "
                       "it was not run again (it may have done part of its work)")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (jid TEXT PRIMARY KEY, fun TEXT NOT NULL, started REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS returns (n INTEGER PRIMARY KEY, jid TEXT NOT NULL UNIQUE, ret BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, event BLOB NOT NULL);
"""


class Spool:
    """The spool file of one agent: open it once at start; ``close()`` at the end."""

    def __init__(self, path: Path, *, max_events: int, max_returns: int) -> None:
        self.path = path
        self._max_events = max_events
        self._max_returns = max_returns
        self._lock = threading.Lock()
        self._closed = False
        self._begun = 0
        self._event_drops = DropLog("event", "spool_max_events", max_events)
        self._return_drops = DropLog("return", "spool_max_returns", max_returns)
        self._db = _open(path)
        with self._locked():
            self.stream, self.epoch = self._next_epoch()
            self.event_count = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            self.min_event_seq = self._min_seq()
        self._report_interrupted()

    @property
    def first_seq(self) -> int:
        """Event ids of this run are above this one (and above every id of earlier runs)."""
        return self.epoch << EPOCH_SHIFT

    @property
    def dropped_events(self) -> int:
        """Events dropped at the bound since start."""
        return self._event_drops.total

    @property
    def dropped_returns(self) -> int:
        """Returns dropped at the bound since start."""
        return self._return_drops.total

    def report_drops(self) -> None:
        """Log drops not reported yet (the master is back, or the agent stops)."""
        self._event_drops.report()
        self._return_drops.report()

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed

    def close(self) -> None:
        """Close the file; later calls raise SpoolError."""
        self.report_drops()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    # ---- the job journal -----------------------------------------------------------------

    def begin_job(self, jid: str, fun: str) -> bool:
        """Journal ``jid`` as started; False if it was seen before (it must not run again)."""
        with self._locked():
            cursor = self._db.execute("INSERT OR IGNORE INTO jobs VALUES (?, ?, ?, NULL)", (jid, fun, time.time()))
            if cursor.rowcount != 1:
                return False
            self._begun += 1
            if self._begun % PRUNE_EVERY == 0:
                self._db.execute(
                    """DELETE FROM jobs WHERE finished IS NOT NULL AND jid NOT IN
                       (SELECT jid FROM jobs WHERE finished IS NOT NULL ORDER BY jid DESC LIMIT ?)""",
                    (KEEP_FINISHED_JOBS,),
                )
            return True

    def _report_interrupted(self) -> None:
        with self._locked():
            rows = self._db.execute("SELECT jid, fun, started FROM jobs WHERE finished IS NULL ORDER BY jid").fetchall()
        for jid, fun, started in rows:
            log.warning("job %s (%s) was cut short when the agent stopped: reporting it failed, not running it again",
                        jid, fun)
            self.put_return(JobReturn(jid=jid, fun=fun, success=False, started=started,
                                      duration=max(0.0, time.time() - started),
                                      error=ErrorInfo(type=INTERRUPTED, message=INTERRUPTED_MESSAGE)))

    # ---- returns -------------------------------------------------------------------------

    def put_return(self, ret: JobReturn) -> None:
        """Spool ``ret`` and mark its job finished, in one transaction."""
        blob = encode(ret)
        with self._locked(), self._transaction():
            self._db.execute("INSERT OR REPLACE INTO returns (jid, ret) VALUES (?, ?)", (ret.jid, blob))
            self._db.execute("UPDATE jobs SET finished = ? WHERE jid = ?", (time.time(), ret.jid))
            (count,) = self._db.execute("SELECT COUNT(*) FROM returns").fetchone()
            excess = count - self._max_returns
            if excess > 0:
                self._db.execute("DELETE FROM returns WHERE n IN (SELECT n FROM returns ORDER BY n LIMIT ?)",
                                 (excess,))
        if excess > 0:
            self._return_drops.add(excess)

    def returns(self, limit: int, max_bytes: int | None = None) -> list[JobReturn]:
        """The oldest spooled returns: at most ``limit``, and past the first no more than ``max_bytes`` in all."""
        rows: list[tuple[str, bytes]] = []
        size = 0
        with self._locked(), contextlib.closing(
            self._db.execute("SELECT jid, ret FROM returns ORDER BY n LIMIT ?", (limit,))
        ) as cursor:
            for jid, blob in cursor:  # row by row: the rows past the bound are never read
                size += len(blob)
                if rows and max_bytes is not None and size > max_bytes:
                    break
                rows.append((jid, blob))
        found: list[JobReturn] = []
        for jid, blob in rows:
            try:
                found.append(decode(blob, JobReturn, "spooled return"))
            except MalformedFrame as exc:
                log.error("spooled return of job %s is unreadable (%s): dropped", jid, exc)
                self.delete_returns([jid])
        return found

    def delete_returns(self, jids: Sequence[str]) -> None:
        """Forget returns the master acknowledged."""
        with self._locked(), self._transaction():
            self._db.executemany("DELETE FROM returns WHERE jid = ?", [(jid,) for jid in jids])

    # ---- events --------------------------------------------------------------------------

    def put_events(self, events: Sequence[AgentEvent]) -> None:
        """Spool events (one already here is kept once); past max_events the oldest go."""
        rows = [(event.seq, encode(event)) for event in events]
        with self._locked(), self._transaction():
            self.event_count += self._db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?)", rows).rowcount
            excess = self.event_count - self._max_events
            if excess > 0:
                self._db.execute("DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)",
                                 (excess,))
                self.event_count -= excess
            self.min_event_seq = self._min_seq()
        if excess > 0:
            self._event_drops.add(excess)

    def events_after(self, seq: int, limit: int) -> list[AgentEvent]:
        """Up to ``limit`` spooled events with ids above ``seq``, in order."""
        with self._locked():
            rows = self._db.execute("SELECT seq, event FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (seq, limit)).fetchall()
        found: list[AgentEvent] = []
        for event_seq, blob in rows:
            try:
                found.append(decode(blob, AgentEvent, "spooled event"))
            except MalformedFrame as exc:
                log.error("spooled event %d is unreadable (%s): dropped", event_seq, exc)
                self.delete_events([event_seq])
        return found

    def delete_events(self, seqs: Sequence[int]) -> None:
        """Forget events the master acknowledged."""
        with self._locked(), self._transaction():
            self.event_count -= self._db.executemany("DELETE FROM events WHERE seq = ?",
                                                     [(seq,) for seq in seqs]).rowcount
            self.min_event_seq = self._min_seq()

    # ---- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock, and turn SQLite's errors into SpoolError."""
        with self._lock:
            if self._closed:
                raise SpoolError(f"spool {self.path} is closed")
            try:
                yield
            except sqlite3.Error as exc:
                raise SpoolError(f"spool {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._db:
            self._db.execute("BEGIN")
            yield

    def _min_seq(self) -> int:
        (seq,) = self._db.execute("SELECT MIN(seq) FROM events").fetchone()
        return int(seq) if seq is not None else 0

    def _next_epoch(self) -> tuple[int, int]:
        with self._transaction():
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            stream, epoch = meta.get("stream"), int(meta.get("epoch", 0)) + 1
            if stream is None or epoch > MAX_EPOCH:
                stream, epoch = secrets.randbits(62) + 1, 1
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [("stream", stream), ("epoch", epoch)])
        return int(stream), epoch


class DropLog:
    """Counts what a bound dropped; logs the first drop at once, then at most every DROP_LOG_SECONDS.

    While the master is away for long, every spill past the bound drops a few events: one
    line per spill would flood the log, so the lines carry counts since the last one.
    """

    def __init__(self, what: str, setting: str, bound: int) -> None:
        self._what, self._setting, self._bound = what, setting, bound
        self._lock = threading.Lock()
        self.total = 0
        self._reported = 0
        self._last = -DROP_LOG_SECONDS

    def add(self, count: int) -> None:
        """Count ``count`` more drops; log them unless a line went out in the last DROP_LOG_SECONDS."""
        with self._lock:
            self.total += count
        if time.monotonic() - self._last >= DROP_LOG_SECONDS:
            self.report()

    def report(self) -> None:
        """Log the drops not logged yet, if any."""
        with self._lock:
            new, self._reported = self.total - self._reported, self.total
            if new:
                self._last = time.monotonic()
        if new:
            log.warning("%s spool full (%s=%d): dropped the %d oldest %ss, %d since start",
                        self._what, self._setting, self._bound, new, self._what, self.total)


def _open(path: Path) -> sqlite3.Connection:
    """Open (or make) the spool; an unreadable file is moved aside, logged, and replaced by an empty one."""
    try:
        return _connect(path)
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorcode not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise SpoolError(f"cannot open the spool {path}: {exc}") from exc
        aside = path.with_name(f"{path.name}.broken-{int(time.time())}")
        log.error("spool %s is unreadable (%s): moved to %s; starting with an empty spool", path, exc, aside)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    try:
        return _connect(path)
    except sqlite3.Error as exc:
        raise SpoolError(f"cannot open the spool {path}: {exc}") from exc


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # made 0600 before SQLite makes it with the umask
    except OSError as exc:
        raise SpoolError(f"cannot open the spool {path}: {exc}") from exc
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
    except sqlite3.Error:
        db.close()
        raise
    return db


__all__ = ["INTERRUPTED", "Spool"]
