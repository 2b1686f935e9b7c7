"""A WebSocket subscriber as the hubs see it, and the event they move. No I/O.

:class:`Subscriber` is one connection's outgoing queue (bounded: :attr:`Subscriber.max_buffer_bytes`), its
group, its ``since`` cursor and its unanswered group/buffered events; :class:`Event` is one webhook event
with its message id, stamped into each frame (:func:`~.buffer.stamp_frame`).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Callable, Collection, Mapping

from .buffer import parse_id, stamp_frame
from .groups import InFlightTable

__all__ = ["Event", "Subscriber"]

_ids = itertools.count(1)


class Subscriber:
    """One WebSocket connection subscribed to one or more channels.

    The hub calls :meth:`offer`; the connection's writer task awaits :meth:`next_frame`, or (the fast
    path, no writer task) the connection takes live frames through :attr:`write_now` while nothing is
    queued, and otherwise sets :attr:`on_ready` and takes the queued frames with :meth:`pop_frame`.

    Args:
        group: the ``?group=`` name: this connection competes with the group's other members for each
            event (docs/delivery.md); None: it gets every event (broadcast).
        since: ``{channel: id}`` from ``?since=``: replay a buffered channel's events after that id.
    """

    def __init__(
        self,
        channels: tuple[str, ...],
        *,
        protocol: int,
        peer: str,
        max_buffer_bytes: int,
        on_overload: Callable[[Subscriber], None] | None = None,
        group: str | None = None,
        since: Mapping[str, str] | None = None,
    ) -> None:
        self.id = next(_ids)
        #: ``time.monotonic()`` when the hub got it (for "unacked while connected" reports)
        self.connected_at = time.monotonic()
        self.channels = channels
        self.channel_set = frozenset(channels)
        self.protocol = protocol
        self.peer = peer
        self.max_buffer_bytes = max_buffer_bytes
        self.on_overload = on_overload
        self.group = group
        self.since: dict[str, str] = dict(since or {})
        #: per buffered channel, the highest message id offered to this connection (starts at ``since``):
        #: where a shared hub resumes it after its backend was unreachable (RedisHub catch-up)
        self.cursor: dict[str, str] = dict(self.since)
        self.overloaded = False
        self.closed = False
        self.buffered_bytes = 0
        #: group deliveries and buffered events sent to this connection and not answered yet.
        self.inflight = InFlightTable()
        self._frames: collections.deque[str] = collections.deque()
        self._held: list[tuple[tuple[str, str] | None, str, bool]] | None = None
        #: replayed frames (and live ones behind them) waiting for room in ``_frames``: (frame, live)
        self._backlog: collections.deque[tuple[str, bool]] = collections.deque()
        self._backlog_live_bytes = 0
        #: the writer's wake-up while it waits for a frame (a bare future, not an asyncio.Event: an
        #: Event's waiter deque alone is ~0.6 KiB per connection, and most connections are idle)
        self._waiter: asyncio.Future[None] | None = None
        #: called (synchronously) when a frame is queued or the subscriber closes, instead of waking a writer
        #: task: the fast path writes frames to its transport from there (relay/fastpath/connection.py).
        self.on_ready: Callable[[], None] | None = None
        #: the fast path's "write this live frame now": True if the connection took it (written, or batched
        #: for the end of this loop iteration), False if it cannot now (then it is queued as usual). Tried
        #: only when nothing is queued, so frames keep their order; saves a queue round trip per event.
        self.write_now: Callable[[str], bool] | None = None

    def __repr__(self) -> str:
        group = f" group={self.group}" if self.group else ""
        return f"<Subscriber #{self.id} {self.peer} {','.join(self.channels)} proto={self.protocol}{group}>"

    @property
    def load(self) -> int:
        """Unanswered group deliveries and buffered events (the group ring picks the least loaded)."""
        return len(self.inflight)

    def offer(self, frame: str, key: tuple[str, str] | None = None, *, replay: bool = False) -> bool:
        """Queue ``frame``. Returns False (and marks the subscriber overloaded) if it does not fit.

        Args:
            key: ``(channel, id)`` of a live buffered event: while :meth:`hold` is in effect, such frames
                are held back and dropped at :meth:`release` if the replay already sent them.
            replay: a replayed buffered event. Replays are paced instead of refused: they wait in a backlog
                (their text is shared with the buffer) and move to the outgoing buffer as it drains; live
                frames queue behind them and count against ``max_buffer_bytes`` as usual.
        """
        if self.closed or self.overloaded:
            return False
        if self._held is not None:
            self._held.append((key, frame, replay))
            return True
        write_now = self.write_now
        if write_now is not None and not (replay or self._frames or self._backlog) and write_now(frame):
            return True
        if not replay and not self._fits(len(frame)):
            self.overloaded = True
            if self.on_overload is not None:
                self.on_overload(self)
            return False
        if replay or self._backlog:
            if not replay:
                self._backlog_live_bytes += len(frame)
            self._backlog.append((frame, not replay))
            self._refill()
            return True
        self._frames.append(frame)
        self.buffered_bytes += len(frame)
        self._wake()
        return True

    def _fits(self, size: int) -> bool:
        """Whether a live frame fits: on its own ``max_buffer_bytes`` behind a replay backlog (so at most
        twice that is queued per connection while it replays), else in the outgoing buffer."""
        if self._backlog:
            return self._backlog_live_bytes + size <= self.max_buffer_bytes or not self._backlog_live_bytes
        return self.buffered_bytes + size <= self.max_buffer_bytes or not self._frames

    def _refill(self) -> None:
        """Move backlog frames to the outgoing buffer while they fit (at least one if it is empty)."""
        moved = False
        while self._backlog:
            frame, live = self._backlog[0]
            if self._frames and self.buffered_bytes + len(frame) > self.max_buffer_bytes:
                break
            self._backlog.popleft()
            if live:
                self._backlog_live_bytes -= len(frame)
            self._frames.append(frame)
            self.buffered_bytes += len(frame)
            moved = True
        if moved:
            self._wake()

    def note(self, channel: str, entry_id: str) -> None:
        """A buffered event ``entry_id`` of ``channel`` was offered: move :attr:`cursor` forward."""
        last = self.cursor.get(channel)
        if last is None or parse_id(entry_id) > parse_id(last):
            self.cursor[channel] = entry_id

    @property
    def holding(self) -> bool:
        """Whether live frames are being held back (:meth:`hold`, until :meth:`release`)."""
        return self._held is not None

    def hold(self) -> None:
        """Hold live frames back while a replay is fetched (a shared hub fetches it asynchronously)."""
        self._held = []

    def release(self, replayed: Collection[tuple[str, str]]) -> None:
        """Queue the held frames, except live buffered ones the replay sent (``(channel, id)`` keys)."""
        held, self._held = self._held or [], None
        for key, frame, replay in held:
            if key is not None and key in replayed:
                continue
            self.offer(frame, key, replay=replay)

    async def next_frame(self) -> str | None:
        """The next queued frame, or None once :meth:`close` was called and the buffer is empty.

        One task at a time (the connection's writer) may wait here.
        """
        while not self._frames:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        frame = self._frames.popleft()
        self.buffered_bytes -= len(frame)
        self._refill()
        return frame

    def pop_frame(self) -> str | None:
        """The next queued frame, or None if there is none now (for connections that use :attr:`on_ready`)."""
        if not self._frames:
            return None
        frame = self._frames.popleft()
        self.buffered_bytes -= len(frame)
        if self._backlog:
            self._refill()
        return frame

    def close(self) -> None:
        """Stop accepting frames; :meth:`next_frame` returns None after the buffer drains."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self.on_ready is not None:
            self.on_ready()
            return
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Event:
    """One webhook event as the hub moves it: the encoded envelope and its message id. Treat as immutable.

    Attributes:
        body: the encoded envelope without ``id``/``channel`` (stamped per frame, :func:`stamp_frame`).
        entry_id: the message id (``<ms>-<seq>``).
        buffered: kept in the channel's buffer (replayed to later subscribers until acked).
    """

    # A plain class with slots, not a frozen dataclass: one is built per webhook, and a frozen dataclass's
    # __init__ (object.__setattr__ per field) cost four times as much.
    __slots__ = ("_live", "_replay", "body", "buffered", "channel", "entry_id", "request_id")

    def __init__(
        self, channel: str, request_id: str, entry_id: str, body: str, buffered: bool = False
    ) -> None:
        self.channel = channel
        self.request_id = request_id
        self.entry_id = entry_id
        self.body = body
        self.buffered = buffered
        self._live: str | None = None
        self._replay: str | None = None

    def _fields(self) -> tuple[str, str, str, str, bool]:
        return (self.channel, self.request_id, self.entry_id, self.body, self.buffered)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"Event({self.channel!r}, {self.request_id!r}, {self.entry_id!r}, buffered={self.buffered})"

    def frame(self, *, replay: bool = False) -> str:
        """The frame subscribers get; built once per event and shared by every subscriber."""
        if replay:
            if self._replay is None:
                self._replay = stamp_frame(
                    self.body, entry_id=self.entry_id, channel=self.channel, replay=True
                )
            return self._replay
        if self._live is None:
            self._live = stamp_frame(self.body, entry_id=self.entry_id, channel=self.channel)
        return self._live

    @property
    def key(self) -> tuple[str, str] | None:
        return (self.channel, self.entry_id) if self.buffered else None
