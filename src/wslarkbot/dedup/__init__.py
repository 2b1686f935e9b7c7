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

from .base import (
    DEFAULT_CLAIM_TTL,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_TTL,
    MAX_CACHED_RESPONSE_BYTES,
    ClaimState,
    Deduplicator,
)
from .base import DEFAULT_MAX_RESPONSES as DEFAULT_MAX_RESPONSES  # importable, not in __all__
from .claim import Claim, claim_event, event_key, key_kind, resolve_dedup
from .memory import MemoryDeduplicator
from .sqlite import SqliteDeduplicator

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
