"""The hub: who is subscribed to which channel, fan-out of frames, and requests waiting for answers.

:class:`Hub` is the interface the HTTP/WebSocket layer uses; :class:`InMemoryHub` serves one process.
:class:`~wslarkbot.relay.redis_hub.RedisHub` (``--redis``, docs/deploy.md) implements the same methods for
several processes sharing one Redis.

Both hubs are built of the same parts: a :class:`~.fanout.LocalFanout` (this process's subscribers and the
offers to them) and a :class:`~.pending.PendingTable` (the requests waiting here). What they share is
written once, here: the replay of buffered events on subscribe, handing on a dropped group event, the
counts and shutdown. A hub says only where buffers live and how answers and fan-out cross processes.

Buffered channels keep their events for later subscribers (:mod:`.buffer`, docs/delivery.md). One writer
task per *connection* drains a subscriber's outgoing buffer. A subscriber whose buffer exceeds
``max_buffer_bytes`` is marked overloaded and disconnected (WebSocket close 1013, "try again later"):
memory per slow subscriber is bounded, and the frame that did not fit is not counted as delivered (so a
request nobody received is answered 503, and Feishu retries).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from typing import NamedTuple

from .buffer import BufferEntry, BufferFull, BufferPolicy, BufferStore, ChannelIds
from .fanout import LocalFanout
from .groups import InFlight
from .limits import BackendUnavailable, LimitExceeded
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

    Subclasses call ``super().__init__`` and implement the abstract methods: where message ids and buffers
    come from (:meth:`assign`, :meth:`mark_acked`, :meth:`_replay_source`, :meth:`_unacked`), how waiting
    requests are opened and answered (:meth:`open_pending`, :meth:`resolve`, :meth:`cancel_pending`,
    :meth:`_still_waiting`). The lifecycle methods (:meth:`start`, :meth:`close`), :meth:`deliver` and the
    hooks around subscribing have single-process defaults; a shared hub overrides them.

    Attributes:
        fanout: this process's subscribers and the offers to them.
        pending: the requests waiting in this process for an answer.
    """

    #: Whether buffered events survive the death of this process (Redis: yes; in memory: no).
    durable_buffers: bool = False
    #: This node's id among the nodes sharing a backend (None: one process); the gateway uses the same.
    node_id: str | None = None
    #: Whether its methods do no I/O and never need a current task (no ``asyncio.timeout``): a caller may
    #: run them before it has a task of its own (the fast path starts webhooks eagerly, fastpath/eager.py).
    synchronous: bool = False

    def __init__(self, *, max_subscribers_per_channel: int, max_pending_replies: int) -> None:
        self.fanout = LocalFanout(
            max_subscribers_per_channel=max_subscribers_per_channel, handed_over=self._handed_over
        )
        self.pending = PendingTable(max_pending_replies)

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:  # noqa: B027 - optional hook; the in-memory hub has nothing to start
        """Connect to whatever backs the hub (called once when the app starts)."""

    async def close(self) -> None:  # noqa: B027 - optional hook, as start()
        """Release connections and tasks (called once at app cleanup, after :meth:`shutdown`)."""

    def describe(self) -> dict[str, object]:
        """Extra ``/status`` fields (e.g. the Redis link); empty for the in-memory hub."""
        return {}

    async def drain(self, timeout: float) -> int:
        """Let waiting requests be answered for up to ``timeout`` seconds; how many still wait."""
        await self.pending.wait_empty(timeout)
        return len(self.pending)

    async def shutdown(self) -> int:
        """Answer every waiting request with a ``shutdown`` outcome; returns how many."""
        return self.pending.resolve_all(Outcome("shutdown"))

    # --- ids and buffers ----------------------------------------------------------------------------

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
    def _handed_over(self, channel: str, entry_id: str) -> None:
        """A buffered event went to an original-protocol subscriber: mark it acked without waiting."""

    @abc.abstractmethod
    async def _replay_source(self, channel: str, since: str | None) -> list[BufferEntry]:
        """What a new subscriber of buffered ``channel`` is offered: entries after ``since``, or (None) the
        unacked ones."""

    @abc.abstractmethod
    async def _unacked(self, channel: str, entry_id: str) -> bool:
        """Whether the buffered event ``entry_id`` is still kept and nobody acked it."""

    async def stalled(self, older_than: float, *, limit: int = 100) -> list[Stall]:
        """Buffered events unacked for ``older_than`` seconds on channels that have had a subscriber in this
        process for as long: a stall an operator must see (docs/delivery.md). At most ``limit`` per channel.

        Raises:
            LimitExceeded: the backend is unreachable (the check is skipped).
        """
        return []

    # --- subscribers --------------------------------------------------------------------------------

    async def subscribe(self, sub: Subscriber) -> None:
        """Add ``sub`` to each of its channels, then replay buffered events to it (``sub.since``).

        Live frames arriving while the replay is read are held and de-duplicated by id
        (:meth:`~.subscriber.Subscriber.hold`).

        Raises:
            LimitExceeded: a channel is full (503), or the backend is unavailable (503).
        """
        buffered = [ch for ch in sub.channels if self.buffers_channel(ch)]
        if buffered:
            sub.hold()
        replayed: set[tuple[str, str]] = set()
        try:
            await self._attach(sub)
            for ch in buffered:
                replayed |= await self._replay(sub, ch, await self._replay_source(ch, sub.since.get(ch)))
        except LimitExceeded:
            sub.release(replayed)
            await self.unsubscribe(sub)
            raise
        sub.release(replayed)

    async def _attach(self, sub: Subscriber) -> None:
        """Register ``sub`` so that it receives live events (a shared hub: on every node)."""
        self.fanout.attach(sub)

    async def _replay(
        self, sub: Subscriber, channel: str, entries: list[BufferEntry]
    ) -> set[tuple[str, str]]:
        """Offer ``sub`` those of ``entries`` it should replay; the ``(channel, id)`` keys it was sent."""
        sent: set[tuple[str, str]] = set()
        candidates = self.fanout.replay_candidates(sub, channel, entries)
        for entry in await self._claim_replays(sub, channel, candidates):
            if self.fanout.offer_replay(sub, entry):
                sent.add((channel, entry.id_text))
        return sent

    async def _claim_replays(
        self, sub: Subscriber, channel: str, entries: list[BufferEntry]
    ) -> list[BufferEntry]:
        """Those of a group member's replay candidates no member of its group elsewhere replays."""
        return entries

    async def unsubscribe(self, sub: Subscriber) -> None:
        """Remove ``sub`` (idempotent); hand its unanswered group events to other members."""
        orphans = self.fanout.detach(sub)
        self._detached(sub)
        for item in orphans:
            with contextlib.suppress(BackendUnavailable):
                await self._hand_on(item)

    def _detached(self, sub: Subscriber) -> None:  # noqa: B027 - optional hook
        """``sub`` left this process (a shared hub stops listening for channels nobody here wants)."""

    async def _hand_on(self, item: InFlight) -> None:
        """An orphaned group event, while Feishu still waits for it or it is buffered and unacked: to another
        member here, else (:meth:`_hand_on_elsewhere`) to other processes."""
        waiting = await self._still_waiting(item.request_id)
        if not waiting and not (item.buffered and await self._unacked(item.channel, item.entry_id)):
            return
        replay = item.replay or not waiting
        event = Event(item.channel, item.request_id, item.entry_id, item.body, buffered=item.buffered)
        if not self.fanout.offer_group(event, item.group, attempt=item.attempt + 1, replay=replay):
            await self._hand_on_elsewhere(item, event, replay=replay)

    async def _hand_on_elsewhere(self, item: InFlight, event: Event, *, replay: bool) -> None:  # noqa: B027
        """No member of the group here took a dropped group event (one process: nobody else can)."""

    def subscribers(self) -> list[Subscriber]:
        """Every connected subscriber of this process (for shutdown)."""
        return self.fanout.subscribers()

    def counts(self) -> dict[str, int]:
        """``channels``, ``subscribers`` and ``pending_replies`` right now."""
        return {**self.fanout.counts(), "pending_replies": len(self.pending)}

    # --- failed logins across processes ------------------------------------------------------------

    async def login_wait(self, keys: Collection[tuple[str, str | None]], limit: int) -> int | None:
        """Seconds until a login on ``keys`` may be tried again because of failures counted on *other*
        processes sharing this hub's backend (this process counts its own: relay/throttle.py); None: go on.
        One process alone has none."""
        return None

    async def login_failed(  # noqa: B027 - optional hook, as login_wait
        self, keys: Collection[tuple[str, str | None]], window: float
    ) -> None:
        """Count a failed login on ``keys`` where every process sharing this hub's backend sees it."""

    # --- fan-out ------------------------------------------------------------------------------------

    def may_answer(self, channel: str) -> bool:
        """Whether a reply or ack to an event on ``channel`` can come (a protocol-2 subscriber, somewhere).

        When False, an event needs no waiting entry: it is answered as soon as it is handed over. A shared
        hub cannot know what other nodes hold and says True.
        """
        return True

    async def publish(self, event: Event) -> list[Subscriber]:
        """Offer ``event`` to this process's subscribers (broadcast + one per group); those that accepted."""
        return self.fanout.publish(event)

    async def deliver(self, event: Event, *, timeout: float) -> Delivery:
        """Fan ``event`` out: every broadcast subscriber of its channel, and one member of each group.

        Args:
            timeout: the longest this may wait for other nodes to report delivery.

        Raises:
            LimitExceeded: the hub cannot deliver at all right now (503, e.g. Redis unreachable).
        """
        return Delivery.of(self.fanout.publish(event))

    # --- waiting requests ---------------------------------------------------------------------------

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

    def is_pending(self, request_id: str) -> bool:
        """Whether ``request_id`` is waiting here (used to pick a fresh id for duplicates)."""
        return request_id in self.pending

    @abc.abstractmethod
    async def _still_waiting(self, request_id: str) -> bool:
        """Whether a webhook still waits for an answer to ``request_id`` (in any process)."""


def buffer_full(exc: BufferFull) -> LimitExceeded:
    """The 503 for a full buffer (Feishu retries later)."""
    return LimitExceeded(503, "buffer_size", str(exc))


class InMemoryHub(Hub):
    """The single-process hub: the local fan-out, a :class:`PendingTable` and a :class:`BufferStore`.

    Args:
        buffers: which channels are buffered, and the bounds; default none.
        clock: wall-clock seconds for message ids and buffer TTLs (injected in tests).
    """

    synchronous = True

    def __init__(
        self,
        *,
        max_subscribers_per_channel: int,
        max_pending_replies: int,
        buffers: BufferPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            max_subscribers_per_channel=max_subscribers_per_channel, max_pending_replies=max_pending_replies
        )
        self.store = BufferStore(buffers or BufferPolicy(), clock=clock)
        self.ids = ChannelIds(clock)

    def may_answer(self, channel: str) -> bool:
        return self.fanout.may_answer(channel)

    # --- ids and buffers ----------------------------------------------------------------------------

    async def assign(self, channel: str, request_id: str, body: str, *, bufferable: bool) -> Event:
        if bufferable and self.store.buffered(channel):
            try:
                entry = self.store.append(channel, request_id, body)
            except BufferFull as exc:
                raise buffer_full(exc) from None
            return Event(channel, request_id, entry.id_text, body, buffered=True)
        return Event(channel, request_id, self.ids.next(channel), body)

    async def mark_acked(self, channel: str, entry_id: str) -> None:
        self.store.mark_acked(channel, entry_id)

    def _handed_over(self, channel: str, entry_id: str) -> None:
        self.store.mark_acked(channel, entry_id)

    def buffers_channel(self, channel: str) -> bool:
        return self.store.buffered(channel)

    async def _replay_source(self, channel: str, since: str | None) -> list[BufferEntry]:
        return self.store.replay(channel, since)

    async def _unacked(self, channel: str, entry_id: str) -> bool:
        buf = self.store.buffer(channel)
        kept = buf.get(entry_id) if buf is not None else None
        return kept is not None and not kept.acked

    async def stalled(self, older_than: float, *, limit: int = 100) -> list[Stall]:
        now = self.store.clock()
        out: list[Stall] = []
        for channel, n in self.fanout.watched(older_than, self.store.buffered).items():
            buf = self.store.buffer(channel)
            old = [e for e in (buf.unacked() if buf is not None else []) if now - e.created >= older_than]
            out += [Stall(channel, e.id_text, now - e.created, n) for e in old[:limit]]
        return out

    # --- waiting requests ---------------------------------------------------------------------------

    async def open_pending(self, request_id: str, channel: str) -> PendingEntry:
        return self.pending.open(request_id, channel)

    async def resolve(
        self, request_id: str, outcome: Outcome, *, channels: Collection[str] | None = None
    ) -> Resolution:
        return self.pending.resolve(request_id, outcome, channels=channels)

    async def cancel_pending(self, request_id: str) -> None:
        self.pending.cancel(request_id)

    async def _still_waiting(self, request_id: str) -> bool:
        entry = self.pending.get(request_id)
        return entry is not None and not entry.future.done()

    def counts(self) -> dict[str, int]:
        return {**super().counts(), **(self.store.counts() if self.store.policy.patterns else {})}

    async def shutdown(self) -> int:
        if self.store.policy.patterns:
            unacked = self.store.counts()["buffered_unacked"]
            if unacked:
                log.warning(
                    "relay stopping: %d buffered events nobody acked are lost (in-memory buffers)", unacked
                )
        return await super().shutdown()
