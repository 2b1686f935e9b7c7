"""The replay buffer's data model and its in-memory store. No I/O.

A webhook for an app with ``replay = true`` is stored as an :class:`Entry` before any delivery is attempted,
so that Feishu hears 200 only for an event the relay holds (docs/long-connection.md "Replay after reconnect").
Every entry is in one of two states:

* **due**: waiting for a connection; any node's pump may :meth:`~ReplayStore.claim` it;
* **leased** until ``due_at``: a courier (on the node holding the client's connection) is delivering it. The
  courier renews the lease while it waits; if its node dies the lease runs out and the entry is due again.

An entry leaves the store when the client answered (:meth:`~ReplayStore.done`, whatever the answer code) or
when it is older than the app's ``replay_ttl``. The store holds at most ``replay_size`` entries per app:
:meth:`~ReplayStore.put` refuses the next one (the webhook answers 503 and Feishu retries).

:class:`MemoryReplay` keeps all this in the process; :class:`~.redis_replay.RedisReplay` in Redis, with the
same semantics, when the relay runs with ``--redis``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Entry", "MemoryReplay", "ReplayStore"]


@dataclass(frozen=True)
class Entry:
    """One buffered event: the plaintext payload pushed to the client, and when it was stored."""

    id: str
    payload: bytes = field(repr=False)
    trace_id: str
    stored_at: float  # seconds since the epoch

    def encode(self) -> str:
        """JSON form stored in Redis."""
        return json.dumps(
            {
                "id": self.id,
                "payload": base64.b64encode(self.payload).decode("ascii"),
                "trace": self.trace_id,
                "at": self.stored_at,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str | bytes) -> Entry:
        data = json.loads(text)
        return cls(data["id"], base64.b64decode(data["payload"]), data["trace"], float(data["at"]))


class ReplayStore(Protocol):
    """Where buffered events live (one process, or Redis shared by the nodes). Times are seconds."""

    async def put(self, app_id: str, entry: Entry, *, size: int, ttl: float, lease: float) -> bool:
        """Store ``entry`` leased for ``lease`` seconds; False when the app already holds ``size`` entries."""

    async def claim(self, app_id: str, *, limit: int, ttl: float, lease: float) -> list[Entry]:
        """Up to ``limit`` due entries, oldest first, now leased for ``lease`` seconds."""

    async def renew(self, app_id: str, ids: Iterable[str], lease: float) -> None:
        """Extend the leases of ``ids`` (entries that are gone stay gone)."""

    async def release(self, app_id: str, entry_id: str) -> None:
        """Make a leased entry due now (its connection went away before answering)."""

    async def done(self, app_id: str, entry_id: str) -> None:
        """Remove an answered entry."""

    async def count(self, app_id: str) -> int:
        """Entries held for ``app_id`` (due or leased)."""


@dataclass
class _Slot:
    entry: Entry
    due_at: float


class MemoryReplay:
    """:class:`ReplayStore` in this process's memory (lost when the process dies). ``clock``: seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._apps: dict[str, dict[str, _Slot]] = {}  # insertion order == storing order

    def _slots(self, app_id: str, ttl: float) -> dict[str, _Slot]:
        slots = self._apps.setdefault(app_id, {})
        oldest = self._clock() - ttl
        for key in [k for k, s in slots.items() if s.entry.stored_at <= oldest]:
            del slots[key]
        return slots

    async def put(self, app_id: str, entry: Entry, *, size: int, ttl: float, lease: float) -> bool:
        slots = self._slots(app_id, ttl)
        if len(slots) >= size:
            return False
        slots[entry.id] = _Slot(entry, self._clock() + lease)
        return True

    async def claim(self, app_id: str, *, limit: int, ttl: float, lease: float) -> list[Entry]:
        now = self._clock()
        out: list[Entry] = []
        for slot in self._slots(app_id, ttl).values():
            if len(out) >= limit:
                break
            if slot.due_at <= now:
                slot.due_at = now + lease
                out.append(slot.entry)
        return out

    async def renew(self, app_id: str, ids: Iterable[str], lease: float) -> None:
        slots = self._apps.get(app_id, {})
        due_at = self._clock() + lease
        for entry_id in ids:
            if entry_id in slots:
                slots[entry_id].due_at = due_at

    async def release(self, app_id: str, entry_id: str) -> None:
        slot = self._apps.get(app_id, {}).get(entry_id)
        if slot is not None:
            slot.due_at = self._clock()

    async def done(self, app_id: str, entry_id: str) -> None:
        self._apps.get(app_id, {}).pop(entry_id, None)

    async def count(self, app_id: str) -> int:
        return len(self._apps.get(app_id, {}))
