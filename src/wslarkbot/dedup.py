"""Client-side deduplication of re-sent events: each handler runs once per event. No network I/O.

Why: Feishu re-pushes an event it believes failed (no HTTP 200 within 3 s: retries after 15 s, 5 min,
1 h, 6 h, same ``event_id``/``uuid``), sometimes pushes a received message twice under a *new* event_id
("不要依赖 event_id", protocol.md §5), and a relay may replay what it buffered while a client was away.

Keys (:func:`event_key`): ``f"{app_id}:{event.dedup_key}"`` -- ``message_id`` for received messages,
``event_id`` for other v2 events and callbacks, ``uuid`` for v1 events, ``open_message_id:card_token:hash``
for legacy card callbacks, a content hash for a v2 callback without event_id
(:attr:`wslarkbot.events.FeishuEvent.dedup_key`). The app_id prefix lets several bots share one store.
An event without a key is never deduplicated; the url_verification challenge never is (it has no key).

The life of a key::

    try_claim(key) -> NEW       first delivery: the handlers may run; the key is *pending* for claim_ttl
    try_claim(key) -> PENDING   a later delivery while the first still runs: do not run, do NOT answer
    try_claim(key) -> DONE      a later delivery once it succeeded: a duplicate, do not run, acknowledge
    mark_done(key)              the handlers succeeded: *done* for ttl; it never runs again within ttl
    release(key)                a handler raised (or the flow was cancelled): forget the key, so a later
                                retry of the same event runs the handlers again

(``claim(key)`` is ``try_claim(key) is ClaimState.NEW``.)

Failure policy: a failed handler releases its claim, so the next delivery of that event (a Feishu retry,
a spontaneous duplicate, a relay replay) runs it again; a succeeded one is never run twice within ``ttl``.
A duplicate that arrives while the first delivery is still *running* is neither run nor answered
(``Bot`` returns ``skipped="in-progress"``, ``no_answer=True``): the relay answers Feishu 504 (or hands
the event to another group member), a webhook answers 503, and Feishu delivers it again later, when the
first delivery is done (then acknowledged) or failed (then run). Only a *done* duplicate is acknowledged:
acknowledging a pending one would lose the event if the process running it dies.

A claim whose process died: :class:`SqliteDeduplicator` records the claiming process (host, pid, start
time, a per-store token) and takes over at once a pending claim whose process is known to be dead: on
the same host (same hostname, boot and pid namespace), the pid no longer exists, is a zombie, or is now
another process (another start time, or this process with an unknown token). A claim made on another
host or container cannot be checked (and a pid check on Windows is not attempted): it blocks re-delivery
until ``claim_ttl`` (10 min by default) expires, so the 1 h / 6 h retries still run it. A frozen process
(SIGSTOP) is alive: its claims are kept. :class:`MemoryDeduplicator` is per process: it dies with it.

Callbacks (card actions, url previews) are deduplicated too: Feishu never retries them, but a relay
replay or a client re-delivery must not approve a request twice. A duplicate callback is answered with
the first delivery's response when it is still cached (a bounded in-memory cache, see
:class:`Deduplicator`), else ``{}`` ("no change"). Each click on a card is a new callback (a new
``event_id``, a new card token), so real repeated clicks are not affected.

Stores: :class:`MemoryDeduplicator` (LRU + TTL, O(1), thread-safe) and :class:`SqliteDeduplicator`
(one SQLite table, WAL, pruned; survives a restart, so an event Feishu re-sends after the bot restarted
is not handled again). Both are thread-safe, because ``def`` handlers run in a thread pool.
"""

from __future__ import annotations

import abc
import enum
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .events import CallbackV2, EventV1, FeishuEvent, LegacyCardAction, MessageEvent
from .exceptions import ConfigurationError

__all__ = [
    "DEFAULT_CLAIM_TTL",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_TTL",
    "MAX_CACHED_RESPONSE_BYTES",
    "Claim",
    "ClaimState",
    "Deduplicator",
    "MemoryDeduplicator",
    "SqliteDeduplicator",
    "claim_event",
    "event_key",
    "key_kind",
    "resolve_dedup",
]

logger = logging.getLogger("wslarkbot.dedup")

#: Feishu's retries span about 7.1 h (protocol.md §5); keys are remembered for 12 h.
DEFAULT_TTL = 12 * 3600.0
#: Bound on the number of remembered keys.
DEFAULT_MAX_ENTRIES = 10_000
#: How long a claim whose handler never reported back blocks re-delivery, when its process cannot be
#: checked (another host; see the module docstring).
DEFAULT_CLAIM_TTL = 600.0
#: Callback responses larger than this (serialised) are not cached; a duplicate then gets ``{}``.
MAX_CACHED_RESPONSE_BYTES = 32 * 1024
#: Number of callback responses kept for duplicate callbacks.
DEFAULT_MAX_RESPONSES = 256


class ClaimState(str, enum.Enum):
    """What :meth:`Deduplicator.try_claim` found."""

    #: Unknown (or expired): now pending for the caller, who runs the handlers.
    NEW = "new"
    #: Another delivery is running the handlers: do not run them, do not answer (deliver again later).
    PENDING = "pending"
    #: The handlers succeeded: do not run them, acknowledge.
    DONE = "done"


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigurationError(f"{name} must be a positive number")


class Deduplicator(abc.ABC):
    """A store of event keys: :meth:`claim`, then :meth:`mark_done` or :meth:`release` (module docstring).

    Every method is synchronous, cheap and thread-safe, so the dispatch flow can call it from the event
    loop and from handler threads alike. Subclasses implement :meth:`claim`, :meth:`release`,
    :meth:`seen`, :meth:`_mark_done` and ``__len__``; this base keeps the callback responses.

    Args:
        max_responses: callback responses kept (LRU, in memory only, each at most
            :data:`MAX_CACHED_RESPONSE_BYTES` serialised) to answer a duplicate callback.
    """

    def __init__(self, *, max_responses: int = DEFAULT_MAX_RESPONSES) -> None:
        if isinstance(max_responses, bool) or not isinstance(max_responses, int) or max_responses < 0:
            raise ConfigurationError("max_responses must be an integer >= 0")
        self.max_responses = max_responses
        self._responses: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._responses_lock = threading.Lock()

    @abc.abstractmethod
    def claim(self, key: str) -> bool:
        """Record ``key`` as pending, atomically; True when it was unknown (or expired): run the handlers.

        False means a duplicate: ``key`` is pending (another delivery is running) or done.
        """

    def try_claim(self, key: str) -> ClaimState:
        """:meth:`claim`, telling a pending duplicate from a done one (``Bot`` calls this).

        The built-in stores override it atomically. This default, for a store that implements only
        :meth:`claim`, cannot tell them apart and reports every duplicate as ``DONE`` (acknowledged, the
        behaviour before ``try_claim`` existed); override it to get ``PENDING``.
        """
        return ClaimState.NEW if self.claim(key) else ClaimState.DONE

    @abc.abstractmethod
    def release(self, key: str) -> None:
        """Forget a *pending* ``key`` so that a later delivery runs again; a done key stays done."""

    @abc.abstractmethod
    def seen(self, key: str) -> bool:
        """True when ``key`` is pending or done (and not expired). Records nothing."""

    @abc.abstractmethod
    def _mark_done(self, key: str) -> None:
        """Record ``key`` as done for ``ttl`` (also when it is not pending any more)."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of keys remembered (pending or done, not expired)."""

    def mark_done(self, key: str, response: dict[str, Any] | None = None) -> None:
        """The handlers of ``key`` succeeded: never run them again within ``ttl``.

        Args:
            key: the claimed key.
            response: a callback's response, kept (bounded) for :meth:`cached_response`.
        """
        self._mark_done(key)
        if response is not None and self.max_responses:
            self._remember_response(key, response)

    def _remember_response(self, key: str, response: dict[str, Any]) -> None:
        try:
            size = len(json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        except (TypeError, ValueError):
            return
        if size > MAX_CACHED_RESPONSE_BYTES:
            return
        with self._responses_lock:
            self._responses[key] = response
            self._responses.move_to_end(key)
            while len(self._responses) > self.max_responses:
                self._responses.popitem(last=False)

    def cached_response(self, key: str) -> dict[str, Any] | None:
        """The response :meth:`mark_done` kept for ``key``, or None (never kept, evicted, restarted)."""
        with self._responses_lock:
            return self._responses.get(key)

    def __bool__(self) -> bool:
        # __len__ would make an empty store falsy; ``if dedup:`` must mean "is there a store".
        return True

    def close(self) -> None:
        """Release resources (a database connection); the in-memory store needs nothing."""
        return None

    def __enter__(self) -> Deduplicator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class MemoryDeduplicator(Deduplicator):
    """Keys in memory: LRU-bounded, each expiring after its TTL; O(1) per operation; thread-safe.

    Args:
        max_entries: at most this many keys; past it the least recently used is forgotten (a very busy
            bot may then re-handle an event re-sent after more than ``max_entries`` newer ones).
        ttl: seconds a done key is remembered.
        clock: seconds, monotonic (injectable for tests).
        claim_ttl: seconds a pending key blocks duplicates if neither done nor released.
        max_responses: see :class:`Deduplicator`.
    """

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
        *,
        claim_ttl: float = DEFAULT_CLAIM_TTL,
        max_responses: int = DEFAULT_MAX_RESPONSES,
    ) -> None:
        super().__init__(max_responses=max_responses)
        _check_positive(max_entries=max_entries, ttl=ttl, claim_ttl=claim_ttl)
        self.max_entries = int(max_entries)
        self.ttl = float(ttl)
        self.claim_ttl = float(claim_ttl)
        self._clock = clock
        # key -> (done, expires_at); least recently used first.
        self._entries: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> tuple[bool, float] | None:
        """The unexpired entry of ``key`` (an expired one is dropped). Call with the lock held."""
        entry = self._entries.get(key)
        if entry is not None and entry[1] <= now:
            del self._entries[key]
            return None
        return entry

    def _put(self, key: str, done: bool, now: float) -> None:
        """Store as most recent; drop expired heads and the LRU overflow. Call with the lock held."""
        self._entries[key] = (done, now + (self.ttl if done else self.claim_ttl))
        self._entries.move_to_end(key)
        # Amortised O(1): every entry is dropped at most once. Expired entries behind an unexpired head
        # are dropped when looked up or when they reach the head.
        while self._entries:
            head_key, (_, head_expires) = next(iter(self._entries.items()))
            if head_expires > now and len(self._entries) <= self.max_entries:
                break
            del self._entries[head_key]

    def try_claim(self, key: str) -> ClaimState:
        now = self._clock()
        with self._lock:
            entry = self._live(key, now)
            if entry is not None:
                self._entries.move_to_end(key)
                return ClaimState.DONE if entry[0] else ClaimState.PENDING
            self._put(key, False, now)
            return ClaimState.NEW

    def claim(self, key: str) -> bool:
        return self.try_claim(key) is ClaimState.NEW

    def release(self, key: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and not entry[0]:
                del self._entries[key]

    def _mark_done(self, key: str) -> None:
        now = self._clock()
        with self._lock:
            self._put(key, True, now)

    def seen(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            return self._live(key, now) is not None

    def __len__(self) -> int:
        now = self._clock()
        with self._lock:
            return sum(1 for _, expires in self._entries.values() if expires > now)


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
    fields = text[text.rfind(")") + 2:].split() if ")" in text else []
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _owner_id(scope: str, token: str) -> str:
    pid = os.getpid()
    stat = _proc_stat(pid)
    return f"{scope} {pid} {stat[1] if stat else '-'} {token}"


def _owner_is_dead(owner: str, own_scope: str, own_token: str) -> bool:
    """True only when the process that wrote ``owner`` is known to be gone (module docstring)."""
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
    row whose process is known to be dead: see the module docstring). Each row records its claimer
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
                        logger.warning("dedup: taking over a claim left pending by a dead process (%s)",
                                       row[2].rsplit(" ", 3)[1])
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


def resolve_dedup(value: bool | Deduplicator | None) -> Deduplicator | None:
    """What ``Bot(dedup=...)`` accepts: None/False (off), True (:class:`MemoryDeduplicator` defaults),
    or a :class:`Deduplicator`.

    Raises:
        ConfigurationError: anything else (a truthy object must not silently become the default store).
    """
    if value is None or value is False:
        return None
    if value is True:
        return MemoryDeduplicator()
    if isinstance(value, Deduplicator):
        return value
    raise ConfigurationError(f"dedup must be None, True, False or a Deduplicator, not {type(value).__name__}")


def key_kind(event: FeishuEvent) -> str:
    """What the event's key is made of, for logs (never the content): ``message_id``, ``event_id``,
    ``uuid``, ``card_token`` (legacy card callbacks) or ``content_hash``."""
    if isinstance(event, MessageEvent):
        return "message_id"
    if isinstance(event, EventV1):
        return "uuid"
    if isinstance(event, LegacyCardAction):
        return "card_token"
    if isinstance(event, CallbackV2) and not event.event_id:
        return "content_hash"
    return "event_id"


def event_key(app_id: str, event: FeishuEvent) -> str | None:
    """``f"{app_id}:{event.dedup_key}"``, or None when the event has no key (never deduplicated)."""
    key = event.dedup_key
    return f"{app_id}:{key}" if key else None


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim_event` for one delivery; call :meth:`finish` once its handlers ran.

    Attributes:
        store: the deduplicator, or None (dedup off: every method is a no-op).
        key: the event's key, or None (no key: never deduplicated).
        duplicate: True when the handlers must not run.
        in_progress: a duplicate of a delivery still running (the key is *pending*): send no answer at
            all, so that the event is delivered again later (:class:`ClaimState`).
    """

    store: Deduplicator | None
    key: str | None
    duplicate: bool = False
    in_progress: bool = False

    def duplicate_response(self, event: FeishuEvent) -> dict[str, Any] | None:
        """The answer to a *done* duplicate: None for an event (acked), the cached response or ``{}`` for
        a callback. (An ``in_progress`` one gets no answer at all.)"""
        if not event.is_callback:
            return None
        cached = self.store.cached_response(self.key) if self.store and self.key else None
        return dict(cached) if cached is not None else {}

    def finish(self, ok: bool, response: dict[str, Any] | None = None) -> None:
        """``ok``: the handlers succeeded (mark done, keeping a callback's ``response``); otherwise
        release the claim so that a retry runs them again. No-op for a duplicate or without a key."""
        if self.store is None or self.key is None or self.duplicate:
            return
        if ok:
            self.store.mark_done(self.key, response)
        else:
            self.store.release(self.key)


def claim_event(store: Deduplicator | None, app_id: str, event: FeishuEvent, request_id: str = "-") -> Claim:
    """Claim ``event`` in ``store`` before its handlers run; logs a duplicate at info (key kind only).

    Example (what ``Bot``'s dispatch flow does)::

        claim = claim_event(self._dedup, self.app_id, event, request_id)
        if claim.in_progress:  # still running elsewhere: the transport must answer nothing at all
            return DispatchResult(request, None, skipped="in-progress", no_answer=True)
        if claim.duplicate:
            return claim.duplicate_response(event)
        try:
            response, failed = run_handlers()
        except BaseException:
            claim.finish(False)
            raise
        claim.finish(not failed, response)
    """
    if store is None:
        return Claim(None, None)
    key = event_key(app_id, event)
    if key is None:
        return Claim(store, key)
    state = store.try_claim(key)
    if state is ClaimState.NEW:
        return Claim(store, key)
    if state is ClaimState.PENDING:
        logger.info("request %s: %s (same %s) still in progress elsewhere: not handled again, not answered "
                    "(to be delivered again)", request_id, event.event_type, key_kind(event))
        return Claim(store, key, duplicate=True, in_progress=True)
    logger.info("request %s: duplicate %s (same %s) not handled again", request_id, event.event_type,
                key_kind(event))
    return Claim(store, key, duplicate=True)
