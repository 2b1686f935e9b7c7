"""The hub: who is subscribed to which channel, fan-out of frames, and requests waiting for answers.

:class:`Hub` is the interface the HTTP/WebSocket layer uses; :class:`InMemoryHub` serves one process.
:class:`~wslarkbot.relay.redis_hub.RedisHub` (``--redis``, docs/deploy.md) implements the same methods for
several processes sharing one Redis.

Fan-out is cheap: the envelope is encoded (and stamped with its message id) once per webhook and the same
``str`` is appended to each subscriber's outgoing buffer (no copy, no task per message). Per channel, every
broadcast subscriber gets each event and each subscriber group one member (:mod:`.groups`); buffered
channels keep their events for later subscribers (:mod:`.buffer`, docs/delivery.md). One writer task per
*connection* drains the buffer. A subscriber whose buffer exceeds ``max_buffer_bytes`` is marked
overloaded and disconnected (WebSocket close 1013, "try again later"): memory per slow subscriber is
bounded, and the frame that did not fit is not counted as delivered (so a request nobody received is
answered 503, and Feishu retries).
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Collection
from typing import NamedTuple

from .buffer import BufferEntry, BufferFull, BufferPolicy, BufferStore
from .groups import GroupRing, InFlight
from .limits import LimitExceeded
from .pending import Outcome, PendingEntry, PendingTable, Resolution
from .subscriber import Event, Subscriber

__all__ = ["Delivery", "Event", "Hub", "InMemoryHub", "Stall", "Subscriber"]

log = logging.getLogger("wslarkbot.relay")


class Delivery(NamedTuple):
    """What :meth:`Hub.deliver` reports about one webhook's fan-out.

    Attributes:
        subscribers: how many subscribers (on every node) accepted the frame; 0 means answer 503.
        protocol2: whether one of them speaks protocol 2 (it will ``reply`` or ``ack``), or an answer
            already arrived; an event delivered only to original clients is answered 200 at once.
    """

    # A NamedTuple, not a frozen dataclass: one is built per webhook (four times cheaper).

    subscribers: int
    protocol2: bool

    @classmethod
    def of(cls, delivered: Collection[Subscriber]) -> Delivery:
        """The report for the subscribers of this process that accepted the frame."""
        return cls(len(delivered), any(s.protocol >= 2 for s in delivered))


class Stall(NamedTuple):
    """A buffered event nobody acked although its channel has had a subscriber here all along."""

    channel: str
    entry_id: str
    #: seconds since the event was buffered
    age: float
    #: subscribers of the channel on this node connected for at least the reporting threshold
    subscribers: int


class Hub(abc.ABC):
    """What the relay's HTTP layer needs from a hub. All methods run on the relay's event loop.

    The lifecycle methods (:meth:`start`, :meth:`close`) and :meth:`deliver` have single-process defaults;
    a shared hub overrides them.
    """

    #: Whether buffered events survive the death of this process (Redis: yes; in memory: no).
    durable_buffers: bool = False
    #: Whether its methods do no I/O and never need a current task (no ``asyncio.timeout``): a caller may
    #: run them before it has a task of its own (the fast path starts webhooks eagerly, fastpath/eager.py).
    synchronous: bool = False

    def may_answer(self, channel: str) -> bool:
        """Whether a reply or ack to an event on ``channel`` can come (a protocol-2 subscriber, somewhere).

        When False, an event needs no waiting entry: it is answered as soon as it is handed over. A shared
        hub cannot know what other nodes hold and says True.
        """
        return True

    async def start(self) -> None:  # noqa: B027 - optional hook; the in-memory hub has nothing to start
        """Connect to whatever backs the hub (called once when the app starts)."""

    async def close(self) -> None:  # noqa: B027 - optional hook, as start()
        """Release connections and tasks (called once at app cleanup, after :meth:`shutdown`)."""

    def describe(self) -> dict[str, object]:
        """Extra ``/status`` fields (e.g. the Redis link); empty for the in-memory hub."""
        return {}

    async def deliver(self, event: Event, *, timeout: float) -> Delivery:
        """Fan ``event`` out: every broadcast subscriber of its channel, and one member of each group.

        Args:
            timeout: the longest this may wait for other nodes to report delivery.

        Raises:
            LimitExceeded: the hub cannot deliver at all right now (503, e.g. Redis unreachable).
        """
        return Delivery.of(await self.publish(event))

    async def stalled(self, older_than: float, *, limit: int = 100) -> list[Stall]:
        """Buffered events unacked for ``older_than`` seconds on channels that have had a subscriber in this
        process for as long: a stall an operator must see (docs/delivery.md). At most ``limit`` per channel.

        Raises:
            LimitExceeded: the backend is unreachable (the check is skipped).
        """
        return []

    @abc.abstractmethod
    async def assign(self, channel: str, request_id: str, body: str, *, bufferable: bool) -> Event:
        """Give an envelope its message id; on a buffered channel (and ``bufferable``), keep it.

        Raises:
            LimitExceeded: the channel's buffer is full of unacked events (503), or the backend is down.
        """

    def buffers_channel(self, channel: str) -> bool:
        """Whether ``channel``'s events are buffered."""
        return False

    @abc.abstractmethod
    async def mark_acked(self, channel: str, entry_id: str) -> None:
        """A subscriber acked (or replied to) a buffered event: it is not replayed again without ``since``."""

    @abc.abstractmethod
    async def subscribe(self, sub: Subscriber) -> None:
        """Add ``sub`` to each of its channels, then replay buffered events to it (``sub.since``).

        Raises :class:`LimitExceeded` (503) when a channel is full.
        """

    @abc.abstractmethod
    async def unsubscribe(self, sub: Subscriber) -> None:
        """Remove ``sub`` (idempotent); hand its unanswered group events to other members."""

    @abc.abstractmethod
    async def publish(self, event: Event) -> list[Subscriber]:
        """Offer ``event`` to this process's subscribers (broadcast + one per group); those that accepted."""

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


def buffer_full(exc: BufferFull) -> LimitExceeded:
    """The 503 for a full buffer (Feishu retries later)."""
    return LimitExceeded(503, "buffer_size", str(exc))


class InMemoryHub(Hub):
    """The single-process hub: dicts of sets, group rings, a :class:`PendingTable` and a :class:`BufferStore`.

    Args:
        buffers: which channels are buffered, and the bounds; default none.
        clock: wall-clock seconds for message ids and buffer TTLs (injected in tests).
    """

    def __init__(
        self,
        *,
        max_subscribers_per_channel: int,
        max_pending_replies: int,
        buffers: BufferPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_subscribers_per_channel = max_subscribers_per_channel
        self._channels: dict[str, dict[int, Subscriber]] = {}
        self._groups: dict[tuple[str, str], GroupRing[Subscriber]] = {}
        #: channel -> its groups with members here (insertion-ordered), so fan-out does not scan _groups
        self._channel_groups: dict[str, dict[str, None]] = {}
        self._subs: dict[int, Subscriber] = {}
        #: protocol-2 subscribers per channel (they reply or ack; original clients never do)
        self._answering: dict[str, int] = {}
        self._pending = PendingTable(max_pending_replies)
        self.store = BufferStore(buffers or BufferPolicy(), clock=clock)
        #: marks a buffered event acked when an original-protocol subscriber got it (they never ack);
        #: a shared hub points it at the shared buffer.
        self.ack_sink: Callable[[str, str], object] = self.store.mark_acked

    synchronous = True

    def may_answer(self, channel: str) -> bool:
        return channel in self._answering

    # --- ids and buffers ----------------------------------------------------------------------------

    async def assign(self, channel: str, request_id: str, body: str, *, bufferable: bool) -> Event:
        if bufferable and self.store.buffered(channel):
            try:
                entry = self.store.append(channel, request_id, body)
            except BufferFull as exc:
                raise buffer_full(exc) from None
            return Event(channel, request_id, entry.id_text, body, buffered=True)
        return Event(channel, request_id, self.store.next_id(channel), body)

    async def mark_acked(self, channel: str, entry_id: str) -> None:
        self.store.mark_acked(channel, entry_id)

    def buffers_channel(self, channel: str) -> bool:
        return self.store.buffered(channel)

    # --- subscribers --------------------------------------------------------------------------------

    async def subscribe(self, sub: Subscriber) -> None:
        self.attach(sub)
        for ch in sub.channels:
            if self.store.buffered(ch):
                for entry in self.replay_entries(sub, ch, self.store.replay(ch, sub.since.get(ch))):
                    self.offer_replay(sub, entry)

    def attach(self, sub: Subscriber) -> None:
        """Register ``sub`` on its channels (and group rings), without replay.

        Raises:
            LimitExceeded: a channel already has ``max_subscribers_per_channel`` subscribers (503).
        """
        for ch in sub.channels:
            if len(self._channels.get(ch, ())) >= self.max_subscribers_per_channel:
                raise LimitExceeded(
                    503,
                    "max_subscribers_per_channel",
                    f"channel {ch} already has {self.max_subscribers_per_channel} subscribers",
                )
        for ch in sub.channels:
            self._channels.setdefault(ch, {})[sub.id] = sub
            if sub.group is not None:
                self._groups.setdefault((ch, sub.group), GroupRing()).add(sub)
                self._channel_groups.setdefault(ch, {})[sub.group] = None
            if sub.protocol >= 2:
                self._answering[ch] = self._answering.get(ch, 0) + 1
        self._subs[sub.id] = sub

    def replay_entries(self, sub: Subscriber, channel: str, entries: list[BufferEntry]) -> list[BufferEntry]:
        """Which of ``entries`` ``sub`` gets on connect: a group member gets only unacked entries that no
        other member of its group is handling (``since`` is then a lower bound); a broadcast subscriber
        gets them all."""
        if sub.group is None:
            return entries
        ring = self._groups.get((channel, sub.group))
        others = [m for m in ring.members() if m is not sub] if ring else []
        return [e for e in entries if not e.acked and not any(e.request_id in m.inflight for m in others)]

    def offer_replay(self, sub: Subscriber, entry: BufferEntry) -> bool:
        """Send a buffered entry to ``sub`` as a replay (``"replay": true``)."""
        event = Event(entry.channel, entry.request_id, entry.id_text, entry.body, buffered=True)
        return self._offer(sub, event, group=sub.group or "", replay=True)

    def detach(self, sub: Subscriber) -> list[InFlight]:
        """Remove ``sub``; returns its unanswered *group* events (for the caller to hand on)."""
        if self._subs.pop(sub.id, None) is None:
            return []
        for ch in sub.channels:
            members = self._channels.get(ch)
            if members is not None:
                members.pop(sub.id, None)
                if not members:
                    del self._channels[ch]
            if sub.protocol >= 2:
                left = self._answering.get(ch, 0) - 1
                if left > 0:
                    self._answering[ch] = left
                else:
                    self._answering.pop(ch, None)
            if sub.group is not None:
                ring = self._groups.get((ch, sub.group))
                if ring is not None:
                    ring.remove(sub)
                    if not len(ring):
                        del self._groups[(ch, sub.group)]
                        names = self._channel_groups[ch]
                        del names[sub.group]
                        if not names:
                            del self._channel_groups[ch]
        return [item for item in sub.inflight.drain() if item.group]

    async def unsubscribe(self, sub: Subscriber) -> None:
        for item in self.detach(sub):
            if self.still_wanted(item):
                self.redeliver(item)

    def still_wanted(self, item: InFlight) -> bool:
        """Whether an orphaned group event should go to another member: Feishu still waits for it, or it is
        a buffered event nobody has acked."""
        entry = self._pending.get(item.request_id)
        if entry is not None and not entry.future.done():
            return True
        if item.buffered:
            buf = self.store.buffer(item.channel)
            kept = buf.get(item.entry_id) if buf is not None else None
            return kept is not None and not kept.acked
        return False

    def redeliver(self, item: InFlight) -> bool:
        """Offer an orphaned group event to another local member of its group; False if none took it."""
        event = Event(item.channel, item.request_id, item.entry_id, item.body, buffered=item.buffered)
        replay = item.replay or not self.is_pending(item.request_id)
        return bool(self.offer_group(event, item.group, attempt=item.attempt + 1, replay=replay))

    def watched(self, older_than: float, buffered: Callable[[str], bool] | None = None) -> dict[str, int]:
        """Buffered channels with subscribers here connected for ``older_than`` seconds, and how many.

        Args:
            buffered: which channels are buffered; default this hub's policy (a shared hub passes its own).
        """
        is_buffered = buffered or self.store.buffered
        now = time.monotonic()
        out: dict[str, int] = {}
        for channel, members in self._channels.items():
            if is_buffered(channel):
                n = sum(1 for sub in members.values() if now - sub.connected_at >= older_than)
                if n:
                    out[channel] = n
        return out

    async def stalled(self, older_than: float, *, limit: int = 100) -> list[Stall]:
        now = self.store.clock()
        out: list[Stall] = []
        for channel, n in self.watched(older_than).items():
            buf = self.store.buffer(channel)
            old = [e for e in (buf.unacked() if buf is not None else []) if now - e.created >= older_than]
            out += [Stall(channel, e.id_text, now - e.created, n) for e in old[:limit]]
        return out

    def has_subscribers(self, channel: str) -> bool:
        """Whether ``channel`` has a subscriber in this process."""
        return channel in self._channels

    def groups_of(self, channel: str) -> list[str]:
        """The groups with members on ``channel`` in this process."""
        return list(self._channel_groups.get(channel, ()))

    # --- fan-out ------------------------------------------------------------------------------------

    async def deliver(self, event: Event, *, timeout: float) -> Delivery:
        return Delivery.of(self.publish_now(event))  # Hub.deliver without the publish() coroutine

    async def publish(self, event: Event) -> list[Subscriber]:
        return self.publish_now(event)

    def publish_now(self, event: Event) -> list[Subscriber]:
        """:meth:`publish`, synchronously."""
        out = self.publish_broadcast(event)
        groups = self._channel_groups.get(event.channel)
        if groups:
            for group in list(groups):
                out += self.offer_group(event, group)
        return out

    def publish_broadcast(self, event: Event) -> list[Subscriber]:
        """Offer ``event`` to every subscriber of its channel without a group."""
        members = self._channels.get(event.channel)
        if not members:
            return []
        # list(): an overload callback may unsubscribe while we iterate.
        return [sub for sub in list(members.values()) if sub.group is None and self._offer(sub, event)]

    def offer_group(
        self, event: Event, group: str, *, attempt: int = 0, replay: bool = False
    ) -> list[Subscriber]:
        """Offer ``event`` to one member of ``group`` (the next one if a member is overloaded)."""
        ring = self._groups.get((event.channel, group))
        tried: set[int] = set()
        while ring is not None:
            member = ring.pick(tried)
            if member is None:
                break
            if self._offer(member, event, group=group, attempt=attempt, replay=replay):
                return [member]
            tried.add(member.id)
        return []

    def _offer(
        self, sub: Subscriber, event: Event, *, group: str = "", attempt: int = 0, replay: bool = False
    ) -> bool:
        # Replays are never held back as duplicates of themselves (Subscriber.release): no key.
        if not sub.offer(event.frame(replay=replay), None if replay else event.key, replay=replay):
            return False
        if event.buffered:
            sub.note(event.channel, event.entry_id)
        if sub.protocol >= 2 and (group or event.buffered):
            sub.inflight.add(
                InFlight(
                    event.channel,
                    group,
                    event.request_id,
                    event.body,
                    event.entry_id,
                    attempt=attempt,
                    replay=replay,
                    buffered=event.buffered,
                )
            )
        elif event.buffered and sub.protocol < 2:
            # Original-protocol subscribers never ack: handing them the event is as far as it goes.
            self.ack_sink(event.channel, event.entry_id)
        return True

    # --- waiting requests ---------------------------------------------------------------------------

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
            **(self.store.counts() if self.store.policy.patterns else {}),
        }

    def subscribers(self) -> list[Subscriber]:
        return list(self._subs.values())

    async def shutdown(self) -> int:
        if self.store.policy.patterns:
            unacked = self.store.counts()["buffered_unacked"]
            if unacked:
                log.warning(
                    "relay stopping: %d buffered events nobody acked are lost (in-memory buffers)", unacked
                )
        return self._pending.resolve_all(Outcome("shutdown"))
