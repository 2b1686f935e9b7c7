"""The hub: who is subscribed to which channel, fan-out of frames, and requests waiting for answers.

:class:`Hub` is the interface the HTTP/WebSocket layer uses; :class:`InMemoryHub` serves one process.
:class:`~wslarkbot.relay.redis_hub.RedisHub` (``--redis``, docs/deploy.md) implements the same methods for
several processes sharing one Redis.

Fan-out is cheap: the envelope is encoded once per webhook and the same ``str`` is appended to each
subscriber's outgoing buffer (no copy, no task per message). One writer task per *connection* drains the
buffer. A subscriber whose buffer exceeds ``max_buffer_bytes`` is marked overloaded and disconnected
(WebSocket close 1013, "try again later"): memory per slow subscriber is bounded, and the frame that did
not fit is not counted as delivered (so a request nobody received is answered 503, and Feishu retries).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import itertools
from collections.abc import Callable, Collection
from dataclasses import dataclass

from .limits import LimitExceeded
from .pending import Outcome, PendingEntry, PendingTable, Resolution

__all__ = ["Delivery", "Hub", "InMemoryHub", "Subscriber"]

_ids = itertools.count(1)


class Subscriber:
    """One WebSocket connection subscribed to one or more channels.

    The hub calls :meth:`offer`; the connection's writer task awaits :meth:`next_frame`.
    """

    def __init__(
        self,
        channels: tuple[str, ...],
        *,
        protocol: int,
        peer: str,
        max_buffer_bytes: int,
        on_overload: Callable[[Subscriber], None] | None = None,
    ) -> None:
        self.id = next(_ids)
        self.channels = channels
        self.channel_set = frozenset(channels)
        self.protocol = protocol
        self.peer = peer
        self.max_buffer_bytes = max_buffer_bytes
        self.on_overload = on_overload
        self.overloaded = False
        self.closed = False
        self.buffered_bytes = 0
        self._frames: collections.deque[str] = collections.deque()
        self._wakeup = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Subscriber #{self.id} {self.peer} {','.join(self.channels)} proto={self.protocol}>"

    def offer(self, frame: str) -> bool:
        """Queue ``frame``. Returns False (and marks the subscriber overloaded) if it does not fit."""
        if self.closed or self.overloaded:
            return False
        size = len(frame)
        if self.buffered_bytes + size > self.max_buffer_bytes and self._frames:
            self.overloaded = True
            if self.on_overload is not None:
                self.on_overload(self)
            return False
        self._frames.append(frame)
        self.buffered_bytes += size
        self._wakeup.set()
        return True

    async def next_frame(self) -> str | None:
        """The next queued frame, or None once :meth:`close` was called and the buffer is empty."""
        while not self._frames:
            if self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        frame = self._frames.popleft()
        self.buffered_bytes -= len(frame)
        return frame

    def close(self) -> None:
        """Stop accepting frames; :meth:`next_frame` returns None after the buffer drains."""
        self.closed = True
        self._wakeup.set()


@dataclass(frozen=True)
class Delivery:
    """What :meth:`Hub.deliver` reports about one webhook's fan-out.

    Attributes:
        subscribers: how many subscribers (on every node) accepted the frame; 0 means answer 503.
        protocol2: whether one of them speaks protocol 2 (it will ``reply`` or ``ack``), or an answer
            already arrived; an event delivered only to original clients is answered 200 at once.
    """

    subscribers: int
    protocol2: bool


class Hub(abc.ABC):
    """What the relay's HTTP layer needs from a hub. All methods run on the relay's event loop.

    The lifecycle methods (:meth:`start`, :meth:`close`) and :meth:`deliver` have single-process defaults;
    a shared hub overrides them.
    """

    async def start(self) -> None:  # noqa: B027 - optional hook; the in-memory hub has nothing to start
        """Connect to whatever backs the hub (called once when the app starts)."""

    async def close(self) -> None:  # noqa: B027 - optional hook, as start()
        """Release connections and tasks (called once at app cleanup, after :meth:`shutdown`)."""

    def describe(self) -> dict[str, object]:
        """Extra ``/status`` fields (e.g. the Redis link); empty for the in-memory hub."""
        return {}

    async def deliver(self, channel: str, frame: str, *, request_id: str, timeout: float) -> Delivery:
        """Fan ``frame`` (the envelope of request ``request_id``) out to every subscriber of ``channel``.

        Args:
            timeout: the longest this may wait for other nodes to report delivery.

        Raises:
            LimitExceeded: the hub cannot deliver at all right now (503, e.g. Redis unreachable).
        """
        delivered = await self.publish(channel, frame)
        return Delivery(len(delivered), any(s.protocol >= 2 for s in delivered))

    @abc.abstractmethod
    async def subscribe(self, sub: Subscriber) -> None:
        """Add ``sub`` to each of its channels. Raises :class:`LimitExceeded` (503) when a channel is full."""

    @abc.abstractmethod
    async def unsubscribe(self, sub: Subscriber) -> None:
        """Remove ``sub`` from its channels (idempotent)."""

    @abc.abstractmethod
    async def publish(self, channel: str, frame: str) -> list[Subscriber]:
        """Offer ``frame`` to every subscriber of ``channel``; returns those that accepted it."""

    @abc.abstractmethod
    async def open_pending(self, request_id: str, channel: str) -> PendingEntry:
        """Open a waiting entry. Raises ``KeyError`` for a duplicate id, :class:`LimitExceeded` when full."""

    @abc.abstractmethod
    async def resolve(
        self, request_id: str, outcome: Outcome, *, channels: Collection[str] | None = None
    ) -> Resolution:
        """Answer a waiting request (see :meth:`PendingTable.resolve`)."""

    @abc.abstractmethod
    async def cancel_pending(self, request_id: str) -> None:
        """Forget a waiting entry (idempotent)."""

    @abc.abstractmethod
    def is_pending(self, request_id: str) -> bool:
        """Whether ``request_id`` is waiting (used to pick a fresh id for duplicates)."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """``channels``, ``subscribers`` and ``pending_replies`` right now."""

    @abc.abstractmethod
    def subscribers(self) -> list[Subscriber]:
        """Every connected subscriber of this process (for shutdown)."""

    @abc.abstractmethod
    async def shutdown(self) -> int:
        """Answer every waiting request with a ``shutdown`` outcome; returns how many."""


class InMemoryHub(Hub):
    """The single-process hub: dicts of sets, and a :class:`PendingTable`."""

    def __init__(self, *, max_subscribers_per_channel: int, max_pending_replies: int) -> None:
        self.max_subscribers_per_channel = max_subscribers_per_channel
        self._channels: dict[str, dict[int, Subscriber]] = {}
        self._subs: dict[int, Subscriber] = {}
        self._pending = PendingTable(max_pending_replies)

    async def subscribe(self, sub: Subscriber) -> None:
        for ch in sub.channels:
            if len(self._channels.get(ch, ())) >= self.max_subscribers_per_channel:
                raise LimitExceeded(
                    503,
                    "max_subscribers_per_channel",
                    f"channel {ch} already has {self.max_subscribers_per_channel} subscribers",
                )
        for ch in sub.channels:
            self._channels.setdefault(ch, {})[sub.id] = sub
        self._subs[sub.id] = sub

    async def unsubscribe(self, sub: Subscriber) -> None:
        if self._subs.pop(sub.id, None) is None:
            return
        for ch in sub.channels:
            members = self._channels.get(ch)
            if members is not None:
                members.pop(sub.id, None)
                if not members:
                    del self._channels[ch]

    def has_subscribers(self, channel: str) -> bool:
        """Whether ``channel`` has a subscriber in this process."""
        return channel in self._channels

    async def publish(self, channel: str, frame: str) -> list[Subscriber]:
        members = self._channels.get(channel)
        if not members:
            return []
        # list(): an overload callback may unsubscribe while we iterate.
        return [sub for sub in list(members.values()) if sub.offer(frame)]

    async def open_pending(self, request_id: str, channel: str) -> PendingEntry:
        return self._pending.open(request_id, channel)

    async def resolve(
        self, request_id: str, outcome: Outcome, *, channels: Collection[str] | None = None
    ) -> Resolution:
        return self._pending.resolve(request_id, outcome, channels=channels)

    async def cancel_pending(self, request_id: str) -> None:
        self._pending.cancel(request_id)

    def is_pending(self, request_id: str) -> bool:
        return request_id in self._pending

    def counts(self) -> dict[str, int]:
        return {
            "channels": len(self._channels),
            "subscribers": len(self._subs),
            "pending_replies": len(self._pending),
        }

    def subscribers(self) -> list[Subscriber]:
        return list(self._subs.values())

    async def shutdown(self) -> int:
        return self._pending.resolve_all(Outcome("shutdown"))
