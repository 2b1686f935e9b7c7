"""The SQLite store of :mod:`wslarkbot.dedup`: :class:`SqliteDeduplicator` (survives a restart; takes over the
pending claims of dead processes)."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable

from .base import (
    DEFAULT_CLAIM_TTL,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_RESPONSES,
    DEFAULT_TTL,
    ClaimState,
    Deduplicator,
    _check_positive,
)

logger = logging.getLogger("wslarkbot.dedup")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS wslarkbot_dedup (
    key     TEXT PRIMARY KEY,
    done    INTEGER NOT NULL,  -- 0 pending, 1 done
    expires REAL NOT NULL,     -- clock() seconds
    touched REAL NOT NULL,     -- clock() of the last claim/hit/done, for LRU pruning
    owner   TEXT NOT NULL DEFAULT ''  -- who claimed it: "<scope> <pid> <start time> <token>" (_owner_id)
);
CREATE INDEX IF NOT EXISTS wslarkbot_dedup_touched ON wslarkbot_dedup (touched);
"""

#: Tokens of the SqliteDeduplicator instances open in this process (a claim by this pid with a token not
#: in here was made by an earlier process that had the same pid).
_LIVE_TOKENS: set[str] = set()


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _host_scope() -> str:
    """Where a pid means the same process: hostname, boot id and pid namespace (Linux; else hostname)."""
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return f"{socket.gethostname()}/{_read('/proc/sys/kernel/random/boot_id')}/{pidns}".replace(" ", "_")


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of ``pid`` from ``/proc``; None without ``/proc``."""
    text = _read(f"/proc/{pid}/stat")
    fields = text[text.rfind(")") + 2 :].split() if ")" in text else []
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _owner_id(scope: str, token: str) -> str:
    pid = os.getpid()
    stat = _proc_stat(pid)
    return f"{scope} {pid} {stat[1] if stat else '-'} {token}"


def _owner_is_dead(owner: str, own_scope: str, own_token: str) -> bool:
    """True only when the process that wrote ``owner`` is known to be gone (:mod:`wslarkbot.dedup`)."""
    parts = owner.rsplit(" ", 3)
    if len(parts) != 4 or os.name == "nt":  # a row from before owners; Windows: os.kill(pid, 0) kills
        return False
    scope, pid_text, start, token = parts
    if token == own_token or scope != own_scope or not pid_text.isdigit():
        return False  # ours (running here), or another host/boot/container: cannot tell
    pid = int(pid_text)
    if pid == os.getpid():
        return token not in _LIVE_TOKENS  # an earlier process with our pid, or a closed store
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists (another user)
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, started = stat
    return state in ("Z", "X") or (start != "-" and started != start)  # a zombie, or a reused pid


class SqliteDeduplicator(Deduplicator):
    """Keys in one SQLite table (stdlib ``sqlite3``, WAL): a restarted bot still knows what it handled.

    Each operation is one short statement or transaction, atomic across threads and processes sharing the
    file (a claim is one ``BEGIN IMMEDIATE`` transaction that takes over only an expired row or a pending
    row whose process is known to be dead: see :mod:`wslarkbot.dedup`). Each row records its claimer
    (``owner``: host scope, pid, process start time, a random per-store token); a database from before
    that column gets it added on open. Expired rows are deleted, and the least recently
    used rows past ``max_entries``, when the store opens and every ``prune_every`` writes, so the table
    holds at most about ``max_entries + prune_every`` rows. ``synchronous=NORMAL``: a power loss may
    forget the last few keys (the event may then run again), which is the trade-off for fast commits.
    Each operation blocks the calling thread for one statement (well under a millisecond on a local
    disk; ``Bot`` calls it on the event loop); put the file on a local disk, not a network share.
    Callback responses are cached in memory only (:class:`Deduplicator`); after a restart a duplicate
    callback is answered ``{}``.

    Args:
        path: the database file (created if missing), or ``":memory:"``.
        ttl, max_entries, claim_ttl, max_responses: as for :class:`MemoryDeduplicator`.
        clock: **wall-clock** epoch seconds (the default ``time.time``): expiries must survive a reboot.
        prune_every: writes between two prunings.

    Raises:
        sqlite3.Error: the file cannot be opened or is not a database.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        ttl: float = DEFAULT_TTL,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
        *,
        claim_ttl: float = DEFAULT_CLAIM_TTL,
        max_responses: int = DEFAULT_MAX_RESPONSES,
        prune_every: int = 256,
    ) -> None:
        super().__init__(max_responses=max_responses)
        _check_positive(max_entries=max_entries, ttl=ttl, claim_ttl=claim_ttl, prune_every=prune_every)
        self.path = os.fspath(path)
        self.ttl = float(ttl)
        self.max_entries = int(max_entries)
        self.claim_ttl = float(claim_ttl)
        self.prune_every = int(prune_every)
        self._clock = clock
        self._lock = threading.Lock()
        self._writes = 0
        self._token = uuid.uuid4().hex
        self._scope = _host_scope()
        self._owner = _owner_id(self._scope, self._token)
        # Autocommit (isolation_level=None): every statement is its own transaction. One connection
        # shared by threads under self._lock.
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._add_owner_column()
            self.prune()
        except BaseException:
            self._conn.close()
            raise
        _LIVE_TOKENS.add(self._token)

    def _add_owner_column(self) -> None:
        """Upgrade a table created before the ``owner`` column (another process may be doing it too)."""

        def has_owner() -> bool:
            return any(row[1] == "owner" for row in self._conn.execute("PRAGMA table_info(wslarkbot_dedup)"))

        if has_owner():
            return
        try:
            self._conn.execute("ALTER TABLE wslarkbot_dedup ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
        except sqlite3.OperationalError:
            if not has_owner():
                raise

    def prune(self) -> int:
        """Delete expired rows, then the least recently used past ``max_entries``; the number deleted."""
        now = self._clock()
        with self._lock:
            deleted = self._conn.execute("DELETE FROM wslarkbot_dedup WHERE expires <= ?", (now,)).rowcount
            (count,) = self._conn.execute("SELECT COUNT(*) FROM wslarkbot_dedup").fetchone()
            if count > self.max_entries:
                deleted += self._conn.execute(
                    "DELETE FROM wslarkbot_dedup WHERE key IN "
                    "(SELECT key FROM wslarkbot_dedup ORDER BY touched LIMIT ?)",
                    (count - self.max_entries,),
                ).rowcount
            self._writes = 0
            return deleted

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes >= self.prune_every:
            self.prune()

    def try_claim(self, key: str) -> ClaimState:
        now = self._clock()
        with self._lock:
            # One write transaction: read the row, decide, write; another process waits (timeout 5 s).
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT done, expires, owner FROM wslarkbot_dedup WHERE key = ?", (key,)
                ).fetchone()
                state = ClaimState.NEW
                if row is not None and row[1] > now:
                    state = ClaimState.DONE if row[0] else ClaimState.PENDING
                    if state is ClaimState.PENDING and _owner_is_dead(row[2], self._scope, self._token):
                        logger.warning(
                            "dedup: taking over a claim left pending by a dead process (%s)",
                            row[2].rsplit(" ", 3)[1],
                        )
                        state = ClaimState.NEW
                if state is ClaimState.NEW:
                    self._conn.execute(
                        "INSERT INTO wslarkbot_dedup (key, done, expires, touched, owner) "
                        "VALUES (?, 0, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET done = 0, "
                        "expires = excluded.expires, touched = excluded.touched, owner = excluded.owner",
                        (key, now + self.claim_ttl, now, self._owner),
                    )
                else:
                    self._conn.execute("UPDATE wslarkbot_dedup SET touched = ? WHERE key = ?", (now, key))
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        if state is ClaimState.NEW:
            self._wrote()
        return state

    def claim(self, key: str) -> bool:
        return self.try_claim(key) is ClaimState.NEW

    def release(self, key: str) -> None:
        # Only this store's own claim: one taken over meanwhile (after claim_ttl) stays with its new owner.
        with self._lock:
            self._conn.execute(
                "DELETE FROM wslarkbot_dedup WHERE key = ? AND done = 0 AND owner = ?", (key, self._owner)
            )

    def _mark_done(self, key: str) -> None:
        now = self._clock()
        with self._lock:
            self._conn.execute(
                "INSERT INTO wslarkbot_dedup (key, done, expires, touched) VALUES (?, 1, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET done = 1, expires = excluded.expires, "
                "touched = excluded.touched",
                (key, now + self.ttl, now),
            )

    def seen(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM wslarkbot_dedup WHERE key = ? AND expires > ?", (key, now)
            ).fetchone()
        return row is not None

    def __len__(self) -> int:
        now = self._clock()
        with self._lock:
            (count,) = self._conn.execute(
                "SELECT COUNT(*) FROM wslarkbot_dedup WHERE expires > ?", (now,)
            ).fetchone()
        return int(count)

    def close(self) -> None:
        """Close the database connection (idempotent). Its pending claims become takeable at once."""
        with self._lock:
            _LIVE_TOKENS.discard(self._token)
            self._conn.close()
