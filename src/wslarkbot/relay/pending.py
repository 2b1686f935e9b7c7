"""Webhook requests waiting for a bot's answer (reply or ack), keyed by request id.

An entry is opened *before* the request is published, so an answer that arrives before the HTTP handler
starts awaiting is kept in the entry's future and never lost. Request ids match exactly.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Collection
from dataclasses import dataclass, field

from .limits import LimitExceeded

__all__ = ["TIMED_OUT", "Outcome", "PendingEntry", "PendingTable", "Resolution", "wait_outcome"]


@dataclass(frozen=True)
class Outcome:
    """How a waiting request ends.

    ``kind`` is ``"reply"`` (``body`` is the JSON text of the HTTP response), ``"ack"`` (the bot handled
    an event: answer ``{"msg":"success"}``), ``"nack"`` (the bot did not handle it: answer 500 at once, so
    Feishu delivers it again) or ``"shutdown"`` (the relay is stopping: answer 503).
    """

    kind: str
    body: str | None = None
    via: str = ""  # "ws" or "http", for the log line


#: What :func:`wait_outcome` returns when the deadline comes first.
TIMED_OUT = Outcome("timeout")


class Resolution(enum.Enum):
    """Result of :meth:`PendingTable.resolve`."""

    OK = "ok"
    UNKNOWN = "unknown or expired request id"
    FORBIDDEN = "this connection is not subscribed to the request's channel"
    ALREADY_ANSWERED = "request already answered"


@dataclass
class PendingEntry:
    request_id: str
    channel: str
    future: asyncio.Future[Outcome] = field(repr=False)


class PendingTable:
    """A bounded table of pending entries. Not thread-safe; use from one event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: dict[str, PendingEntry] = {}
        self._emptied: asyncio.Event | None = None  # made by wait_empty(), set when the table empties

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._entries

    def get(self, request_id: str) -> PendingEntry | None:
        return self._entries.get(request_id)

    def open(self, request_id: str, channel: str) -> PendingEntry:
        """Open an entry.

        Raises:
            KeyError: ``request_id`` is already pending (the caller picks a fresh id).
            LimitExceeded: ``limit`` entries are already open (503).
        """
        if request_id in self._entries:
            raise KeyError(request_id)
        if len(self._entries) >= self.limit:
            raise LimitExceeded(
                503, "max_pending_replies", f"too many requests waiting for replies (limit {self.limit})"
            )
        entry = PendingEntry(request_id, channel, asyncio.get_running_loop().create_future())
        self._entries[request_id] = entry
        return entry

    def resolve(
        self, request_id: str, outcome: Outcome, *, channels: Collection[str] | None = None
    ) -> Resolution:
        """Deliver ``outcome`` to the waiting request. The first answer wins.

        Args:
            channels: the answering connection's channels; the request's channel must be among them.
                ``None`` skips the check (``POST /sub/<request_id>`` replies, as in the original relay).
        """
        entry = self._entries.get(request_id)
        if entry is None:
            return Resolution.UNKNOWN
        if channels is not None and entry.channel not in channels:
            return Resolution.FORBIDDEN
        if entry.future.done():
            return Resolution.ALREADY_ANSWERED
        entry.future.set_result(outcome)
        return Resolution.OK

    def cancel(self, request_id: str) -> None:
        """Forget an entry (idempotent)."""
        entry = self._entries.pop(request_id, None)
        if entry is not None and not entry.future.done():
            entry.future.cancel()
        if not self._entries and self._emptied is not None:
            self._emptied.set()

    async def wait_empty(self, timeout: float) -> bool:
        """Wait until no request waits here (each webhook forgets its entry when answered), at most
        ``timeout`` seconds; whether the table is empty."""
        if self._entries:
            self._emptied = asyncio.Event()
            try:
                await asyncio.wait_for(self._emptied.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                self._emptied = None
        return not self._entries

    def resolve_all(self, outcome: Outcome) -> int:
        """Answer every waiting request with ``outcome`` (shutdown). Returns how many were waiting."""
        n = 0
        for entry in self._entries.values():
            if not entry.future.done():
                entry.future.set_result(outcome)
                n += 1
        return n


def _expire(future: asyncio.Future[Outcome]) -> None:
    if not future.done():
        future.set_result(TIMED_OUT)


async def wait_outcome(entry: PendingEntry, timeout: float) -> Outcome:
    """The entry's outcome, or :data:`TIMED_OUT` once ``timeout`` seconds have passed.

    One timer ends the wait by answering the entry itself (no extra futures or tasks, unlike
    ``wait_for(shield(...))``): from then on the entry counts as answered, so a reply that comes later is
    refused as already answered rather than accepted and dropped.
    """
    future = entry.future
    if future.done():
        return future.result()
    timer = asyncio.get_running_loop().call_later(timeout, _expire, future)
    try:
        return await future
    finally:
        timer.cancel()
