"""The in-memory store of :mod:`wslarkbot.dedup`: :class:`MemoryDeduplicator` (per process)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
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
