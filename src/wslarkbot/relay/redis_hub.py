"""``RedisHub``: several relay nodes sharing one Redis (``wslarkbot serve --redis redis://...``, issue 4).

A webhook arriving at any node reaches the subscribers on every node, and an answer (``POST /sub/<id>``,
WebSocket ``reply``/``ack``) arriving at any node reaches the webhook request waiting on another node.
Needs the ``redis`` extra; :func:`~.app.create_app` imports this module only when ``redis_url`` is set.

Design (docs/deploy.md has the operator's view; names and messages are in :mod:`.redis_protocol`):

* **Local state stays local.** Each node keeps its subscribers in the :class:`~.fanout.LocalFanout` and
  its waiting requests in the :class:`~.pending.PendingTable` every hub has; Redis carries only what
  crosses nodes. Nothing is stored per subscriber.
* **Fan-out: Redis pub/sub, one channel per relay channel.** A node subscribes (on its one pub/sub
  connection) to ``wslarkbot:ch:<channel>`` while it has local subscribers of ``<channel>``, and a
  WebSocket's hello is sent only after Redis confirmed that subscription, so "hello received" means
  "events reach me". The publishing node PUBLISHes the envelope once; Redis answers how many *nodes* got it.
* **Honest delivery counts.** Each receiving node offers the frame to its local subscribers and reports
  ``{n, protocol2}`` back on the publishing node's channel ``wslarkbot:node:<node>:replies``. The publishing
  node waits (within the request's deadline) until every reached node reported, or an answer arrived.
  0 nodes reached, or 0 subscribers reported -> 503 ``Retry-After``, as on one node.
* **Answers: a key per waiting request and one Lua script.** ``wslarkbot:req:<id>`` = ``"<node> <channel>"``
  (``SET NX PX``, so a request id is unique across nodes). The answering node runs :data:`RESOLVE_SCRIPT`:
  unknown / wrong channel / already answered are decided atomically in Redis (the first answer wins across
  nodes), and the answer is PUBLISHed to the waiting node's channel. A waiting node that died makes the
  PUBLISH reach nobody: the answer gets "unknown or expired request id".
* **Redis down**: :class:`~.redis_link.RedisLink` is down; webhooks, subscriptions and answers get 503 at
  once (logged once per state change), nothing is queued; WebSockets stay open and receive again after
  the link reconnects and resubscribes.
* **Buffers** (``--buffer``, docs/delivery.md): a buffered channel's events are XADDed (one Lua script,
  :data:`~.redis_protocol.APPEND_SCRIPT`) to the Stream ``wslarkbot:buf:<channel>``; the Stream id is the
  event's message id. Acks add the id to ``wslarkbot:buf:<channel>:acked``. A subscriber connecting to any
  node is replayed the Stream (after ``since``, or the unacked entries) after Redis confirmed its live
  subscription; live frames arriving meanwhile are held and de-duplicated by id
  (:meth:`~.hub.Subscriber.hold`). The Stream outlives the node that accepted the event.
* **Groups** (``?group=``): every node with members of the group receives the fan-out; the nodes race for
  ``SET NX wslarkbot:grp:<ch>:<group>:<rid>:0`` and only the winner offers the event to one of its local
  members (least loaded, round-robin). When that member's connection closes unanswered, its node offers
  the event to another local member, else publishes a *hand-on* (the same fan-out message for that group
  only, attempt n+1) for which the other nodes race again, while Feishu still waits or the buffered event
  is unacked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import ProtocolError
from .buffer import BufferEntry, BufferFull, BufferPolicy, ChannelIds, parse_id
from .groups import InFlight
from .hub import Delivery, Event, Hub, Stall, Subscriber, buffer_full
from .limits import BackendUnavailable
from .pending import Outcome, PendingEntry, Resolution
from .redis_link import RedisLink
from .redis_protocol import (
    APPEND_SCRIPT,
    RESOLVE_SCRIPT,
    DeliveryReport,
    Tally,
    acked_key,
    channel_of,
    claim_key,
    decode_fanout,
    decode_node_message,
    encode_delivered,
    encode_fanout,
    fanout_channel,
    login_key,
    new_node_id,
    node_channel,
    pending_value,
    replay_claim_key,
    request_key,
    resolution_of,
    resolve_args,
    stream_key,
)

__all__ = ["RedisHub", "new_node_id"]

log = logging.getLogger("wslarkbot.relay.redis")


class RedisHub(Hub):
    """The hub of one node among several sharing ``url`` (see the module docstring).

    Args:
        url: the Redis URL (may carry a password; never logged).
        pending_ttl: seconds a waiting-request key lives (longest wait + margin; a dead node's keys expire).
        node_id: default :func:`new_node_id`.
        timeout: Redis socket and subscribe-confirmation timeout, seconds.
        start_wait: how long :meth:`start` waits for the first connection; after that the node serves
            (503 for webhooks) and keeps connecting in the background.
        clock: wall-clock seconds, for the buffer's age horizon (injected in tests).
        wait_replicas: replicas that must have a buffered event before it is answered 200 (``WAIT``):
            with a Sentinel-managed master, 1 keeps a failover from losing events Feishu was told are kept.
    """

    def __init__(
        self,
        url: str,
        *,
        max_subscribers_per_channel: int,
        max_pending_replies: int,
        pending_ttl: float,
        node_id: str | None = None,
        timeout: float = 1.0,
        start_wait: float = 5.0,
        buffers: BufferPolicy | None = None,
        clock: Callable[[], float] = time.time,
        wait_replicas: int = 0,
    ) -> None:
        super().__init__(
            max_subscribers_per_channel=max_subscribers_per_channel, max_pending_replies=max_pending_replies
        )
        self.node_id = node_id or new_node_id()
        self.buffers = buffers or BufferPolicy()
        self.ids = ChannelIds(clock)
        self.wait_replicas = wait_replicas
        self._tasks: set[asyncio.Task[None]] = set()
        self.pending_ttl_ms = max(1, int(pending_ttl * 1000))
        self._node_channel = node_channel(self.node_id)
        self.link = RedisLink(
            url,
            self._node_channel,
            self._on_message,
            timeout=timeout,
            client_name=f"wslarkbot-{self.node_id}",
            on_down=self._link_down,
            on_up=self._link_up,
        )
        self._clock = clock
        #: subscribers whose live frames are held since the link went down, with what is left to catch up
        self._behind: dict[int, _CatchUp] = {}
        self._resolve = self.link.client.register_script(RESOLVE_SCRIPT)
        self._append = self.link.client.register_script(APPEND_SCRIPT)
        self._tallies: dict[str, Tally] = {}
        self._start_wait = start_wait

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.link.start(self._start_wait)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.link.close()

    durable_buffers = True
    node_id: str

    def describe(self) -> dict[str, object]:
        return {"redis": {"node": self.node_id, "url": self.link.shown_url, "connected": self.link.connected}}

    # --- ids and buffers ----------------------------------------------------------------------------

    async def assign(self, channel: str, request_id: str, body: str, *, bufferable: bool) -> Event:
        """Buffered channel: XADD to its Stream (the Stream id is the message id). Otherwise a node-local id.

        Raises:
            LimitExceeded: the buffer is full of unacked events (503), or Redis is unavailable (503).
        """
        if not (bufferable and self.buffers.buffered(channel)):
            return Event(channel, request_id, self.ids.next(channel), body)
        args: list[str | int] = [int(self.buffers.ttl * 1000), self.buffers.size, request_id, body]
        keys = [stream_key(channel), acked_key(channel)]
        if self.wait_replicas:
            reply, replicas = await self.link.command(lambda r: self._append_replicated(r, keys, args))
        else:
            reply, replicas = await self.link.command(lambda r: self._append(keys=keys, args=args)), 0
        if _text(reply[0]) != "ok":
            raise buffer_full(
                BufferFull(f"buffer of channel {channel} holds {self.buffers.size} unacked events")
            )
        if replicas < self.wait_replicas:
            # In the master's Stream, but a failover now could lose it: not answered 200 (Feishu retries).
            log.warning(
                "buffered event of %s confirmed by %d of %d replicas in time; answering 503",
                channel,
                replicas,
                self.wait_replicas,
            )
            raise BackendUnavailable("relay backend (redis) could not replicate the event in time")
        return Event(channel, request_id, _text(reply[1]), body, buffered=True)

    async def _append_replicated(self, r: Any, keys: list[str], args: list[str | int]) -> tuple[Any, int]:
        """The append script, then ``WAIT`` on the same connection: how many replicas have the event."""
        pipe = r.pipeline(transaction=False)
        await self._append(keys=keys, args=args, client=pipe)
        pipe.wait(self.wait_replicas, WAIT_MS)
        reply, replicas = await pipe.execute()
        return reply, int(replicas)

    def buffers_channel(self, channel: str) -> bool:
        return self.buffers.buffered(channel)

    async def mark_acked(self, channel: str, entry_id: str) -> None:
        """ZADD the id to the channel's acked set (best effort: with Redis down it may be replayed again)."""
        try:
            ms = parse_id(entry_id)[0]
        except ValueError:
            return
        ttl_ms = int(self.buffers.ttl * 1000)

        async def add(r: Any) -> Any:
            pipe = r.pipeline(transaction=False)
            pipe.zadd(acked_key(channel), {entry_id: ms})
            pipe.pexpire(acked_key(channel), ttl_ms)
            return await pipe.execute()

        with contextlib.suppress(BackendUnavailable):
            await self.link.command(add)

    def _handed_over(self, channel: str, entry_id: str) -> None:
        self._spawn(self.mark_acked(channel, entry_id))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_buffer(
        self, channel: str, since: str | None, *, inclusive: bool = False
    ) -> list[BufferEntry]:
        """The kept entries of ``channel`` (after ``since``, or from it with ``inclusive``), acked or not."""
        start = "-" if since is None else since if inclusive else f"({since}"

        async def read(r: Any) -> Any:
            pipe = r.pipeline(transaction=False)
            pipe.xrange(stream_key(channel), start, "+")
            pipe.zrange(acked_key(channel), 0, -1)
            return await pipe.execute()

        rows, acked_ids = await self.link.command(read)
        acked = {_text(a) for a in acked_ids}
        horizon_ms = (self._clock() - self.buffers.ttl) * 1000
        out: list[BufferEntry] = []
        for raw_id, fields in rows:
            entry_id = _text(raw_id)
            if parse_id(entry_id)[0] < horizon_ms:
                continue
            rid, body = _text(fields[b"rid"]), _text(fields[b"body"])
            out.append(BufferEntry(parse_id(entry_id), channel, rid, "", body, 0.0, entry_id in acked))
        return out

    async def stalled(self, older_than: float, *, limit: int = 100) -> list[Stall]:
        """:meth:`Hub.stalled` for this node's subscribers, read from the shared Streams."""
        watched = self.fanout.watched(older_than, self.buffers.buffered)
        if not watched:
            return []
        now_ms = self._clock() * 1000
        end = f"{int(now_ms - older_than * 1000)}-0"

        async def read(r: Any) -> Any:
            pipe = r.pipeline(transaction=False)
            for channel in watched:
                pipe.xrange(stream_key(channel), "-", end, count=limit)
            rows = await pipe.execute()
            pipe = r.pipeline(transaction=False)
            for channel, entries in zip(watched, rows, strict=True):
                for raw_id, _fields in entries:
                    pipe.zscore(acked_key(channel), raw_id)
            return rows, await pipe.execute()

        rows, scores = await self.link.command(read)
        out: list[Stall] = []
        acked = iter(scores)
        for (channel, n), entries in zip(watched.items(), rows, strict=True):
            for raw_id, _fields in entries:
                entry_id = _text(raw_id)
                ms = parse_id(entry_id)[0]
                if next(acked) is None and ms >= now_ms - self.buffers.ttl * 1000:
                    out.append(Stall(channel, entry_id, (now_ms - ms) / 1000, n))
        return out

    # --- subscribers --------------------------------------------------------------------------------

    async def _attach(self, sub: Subscriber) -> None:
        """Register locally, then make sure this node receives the channels (Redis confirmed).

        Raises:
            LimitExceeded: a channel is full on this node (503), or Redis is unavailable (503).
        """
        if not self.link.connected:
            raise BackendUnavailable()
        self.fanout.attach(sub)
        await self.link.listen(fanout_channel(ch) for ch in sub.channels)

    async def _replay_source(self, channel: str, since: str | None) -> list[BufferEntry]:
        entries = await self._read_buffer(channel, since)
        return entries if since is not None else [e for e in entries if not e.acked]

    # --- catching up after a Redis outage -----------------------------------------------------------
    #
    # While the link is down this node receives no fan-out, and the nodes do not come back at the same
    # moment: an event buffered by a node that is up again while this one still resubscribes is answered
    # 200 ("buffered": no node reported a subscriber) and is in the Stream, but was never offered to this
    # node's subscribers, which stayed connected. So when the link goes down, every local subscriber of a
    # buffered channel holds its live frames; when it is up again (all channels resubscribed), each is
    # offered what the Stream holds after its cursor, and then the held frames the catch-up did not send.

    def _link_down(self) -> None:
        for sub in self.fanout.subscribers():
            channels = [ch for ch in sub.channels if self.buffers.buffered(ch)]
            if channels and not sub.closed and not sub.holding:  # holding: its subscribe() fails and ends it
                sub.hold()
                self._behind[sub.id] = _CatchUp(sub, {ch: sub.cursor.get(ch) for ch in channels})

    def _link_up(self) -> None:
        behind, self._behind = self._behind, {}
        for job in behind.values():
            self._spawn(self._catch_up(job))

    async def _catch_up(self, job: _CatchUp) -> None:
        sub = job.sub
        try:
            while job.cursors and not sub.closed:
                channel, cursor = next(iter(job.cursors.items()))
                job.replayed |= await self._replay(sub, channel, await self._missed(sub, channel, cursor))
                del job.cursors[channel]
        except BackendUnavailable:  # down again: go on when it is back
            if not sub.closed:
                self._behind[sub.id] = job
                if self.link.connected:
                    self._link_up()
                return
        sub.release(job.replayed)
        if job.replayed:
            log.info(
                "redis reconnected: %d buffered events sent to subscriber %s (%s) were missed meanwhile",
                len(job.replayed),
                sub.peer,
                ",".join(sub.channels),
            )

    async def _missed(self, sub: Subscriber, channel: str, cursor: str | None) -> list[BufferEntry]:
        """The entries of ``channel`` that ``sub`` may have missed while the link was down: those after its
        cursor, and unacked ones up to :data:`CATCH_UP_MARGIN_MS` before it (fan-outs of several nodes need
        not arrive in id order), except what ``sub`` holds unanswered already."""
        if cursor is None:
            entries = [e for e in await self._read_buffer(channel, None) if not e.acked]
        else:
            last = parse_id(cursor)
            start = f"{max(0, last[0] - CATCH_UP_MARGIN_MS)}-0"
            entries = [
                e
                for e in await self._read_buffer(channel, start, inclusive=True)
                if e.id > last or not e.acked
            ]
        return [e for e in entries if e.request_id not in sub.inflight]

    async def _claim_replays(
        self, sub: Subscriber, channel: str, entries: list[BufferEntry]
    ) -> list[BufferEntry]:
        """A group member replays only the entries no other member (on any node) is replaying: it must win
        ``SET NX`` on the entry's replay claim."""
        if sub.group is None or not entries:
            return entries
        group = sub.group

        async def claim(r: Any) -> Any:
            pipe = r.pipeline(transaction=False)
            for e in entries:
                pipe.set(
                    replay_claim_key(channel, group, e.id_text), self.node_id, nx=True, px=self.pending_ttl_ms
                )
            return await pipe.execute()

        won = await self.link.command(claim)
        return [e for e, ok in zip(entries, won, strict=True) if ok]

    def _detached(self, sub: Subscriber) -> None:
        self._behind.pop(sub.id, None)
        idle = [ch for ch in sub.channels if not self.fanout.has_subscribers(ch)]
        self.link.unlisten(fanout_channel(ch) for ch in idle)

    async def _hand_on_elsewhere(self, item: InFlight, event: Event, *, replay: bool) -> None:
        """Publish a *hand-on*: the other nodes with members of the group race for it again."""
        if item.buffered:  # let the next member that connects, on any node, replay it
            self.link.forget(replay_claim_key(item.channel, item.group, item.entry_id))
        data = encode_fanout(self.node_id, event, group=item.group, attempt=item.attempt + 1, replay=replay)
        await self.link.command(lambda r: r.publish(fanout_channel(item.channel), data))

    async def _still_waiting(self, request_id: str) -> bool:
        value = await self.link.command(lambda r: r.get(request_key(request_id)))
        return value is not None and not _text(value).endswith(" answered")

    async def _unacked(self, channel: str, entry_id: str) -> bool:
        async def check(r: Any) -> Any:
            pipe = r.pipeline(transaction=False)
            pipe.xrange(stream_key(channel), entry_id, entry_id)
            pipe.zscore(acked_key(channel), entry_id)
            return await pipe.execute()

        rows, score = await self.link.command(check)
        return bool(rows) and score is None

    async def deliver(self, event: Event, *, timeout: float) -> Delivery:
        request_id = event.request_id
        tally = self._tallies[request_id] = Tally()
        try:
            nodes = await self.link.command(
                lambda r: r.publish(fanout_channel(event.channel), encode_fanout(self.node_id, event))
            )
            tally.expect(int(nodes))
            if nodes:
                try:
                    await asyncio.wait_for(tally.settled.wait(), timeout)
                except asyncio.TimeoutError:
                    log.warning(
                        "request_id=%s: %d of %d relay nodes reported delivery within %g s",
                        request_id,
                        tally.reports,
                        nodes,
                        timeout,
                    )
        finally:
            del self._tallies[request_id]
        if tally.answered:
            return Delivery(max(1, tally.subscribers), True)
        return Delivery(tally.subscribers, tally.protocol2)

    # --- waiting requests ---------------------------------------------------------------------------

    async def open_pending(self, request_id: str, channel: str) -> PendingEntry:
        """Open locally and claim the id in Redis (``KeyError`` when another node waits for the same id)."""
        if not self.link.connected:
            raise BackendUnavailable()
        entry = self.pending.open(request_id, channel)
        try:
            claimed = await self.link.command(
                lambda r: r.set(
                    request_key(request_id),
                    pending_value(self.node_id, channel),
                    nx=True,
                    px=self.pending_ttl_ms,
                )
            )
        except BackendUnavailable:
            self.pending.cancel(request_id)
            raise
        if not claimed:
            self.pending.cancel(request_id)
            raise KeyError(request_id)
        return entry

    async def resolve(
        self, request_id: str, outcome: Outcome, *, channels: Collection[str] | None = None
    ) -> Resolution:
        """Answer the request wherever it waits (atomically in Redis: the first answer wins).

        Raises:
            BackendUnavailable: Redis is unavailable (503 / an error frame).
        """
        args = resolve_args(request_id, outcome, channels)
        reply = await self.link.command(lambda r: self._resolve(keys=[request_key(request_id)], args=args))
        try:
            return resolution_of(reply)
        except ProtocolError:
            log.error("unexpected reply from the resolve script; treating %s as unknown", request_id)
            return Resolution.UNKNOWN

    async def cancel_pending(self, request_id: str) -> None:
        self.pending.cancel(request_id)
        # Not awaited: the answer to Feishu need not wait for it. Until the DEL lands, a late answer gets
        # "ok" from the script and is dropped here; if it never lands, the key expires after pending_ttl.
        self.link.forget(request_key(request_id))

    # --- failed logins across nodes (relay/throttle.py counts a node's own) -------------------------

    async def login_wait(self, keys: Collection[tuple[str, str | None]], limit: int) -> int | None:
        """Seconds left on a key failed ``limit`` times on any node (``wslarkbot:authfail:*``)."""
        if not limit:
            return None
        names = [login_key(*k) for k in keys]

        async def read(r: Any) -> Any:
            pipe = r.pipeline(transaction=False)
            for name in names:
                pipe.get(name)
                pipe.pttl(name)
            return await pipe.execute()

        try:
            values = await self.link.command(read)
        except BackendUnavailable:
            return None  # each node's own throttle still applies
        waits = [
            int(ttl)
            for count, ttl in zip(values[::2], values[1::2], strict=True)
            if count is not None and int(count) >= limit and int(ttl) > 0
        ]
        return max(1, math.ceil(max(waits) / 1000)) if waits else None

    async def login_failed(self, keys: Collection[tuple[str, str | None]], window: float) -> None:
        """INCR each key's count; the window starts again with each failure (a guesser who keeps trying
        stays refused)."""
        window_ms = max(1, int(window * 1000))
        names = [login_key(*k) for k in keys]

        async def count(r: Any) -> Any:
            pipe = r.pipeline(transaction=False)
            for name in names:
                pipe.incr(name)
                pipe.pexpire(name, window_ms)
            return await pipe.execute()

        with contextlib.suppress(BackendUnavailable):
            await self.link.command(count)

    # --- messages from Redis ------------------------------------------------------------------------

    async def _on_message(self, redis_channel: str, data: bytes) -> None:
        if redis_channel == self._node_channel:
            await self._on_node_message(data)
            return
        channel = channel_of(redis_channel)
        if channel is None:
            return
        try:
            fan = decode_fanout(channel, data)
        except ProtocolError:
            log.warning("ignored a malformed fan-out message on %s", redis_channel)
            return
        event = fan.event
        if fan.group is None:
            delivered = self.fanout.broadcast(event)
            groups = self.fanout.groups_of(channel)
        else:  # a hand-on: only that group
            delivered = []
            groups = [fan.group] if fan.group in self.fanout.groups_of(channel) else []
        for group in groups:
            if await self._claim(claim_key(channel, group, event.request_id, fan.attempt)):
                if event.buffered:  # a member connecting elsewhere must not replay it meanwhile
                    await self._claim(replay_claim_key(channel, group, event.entry_id), force=True)
                delivered += self.fanout.offer_group(event, group, attempt=fan.attempt, replay=fan.replay)
        report = DeliveryReport(event.request_id, *Delivery.of(delivered))
        if fan.origin == self.node_id:
            self._on_report(report)
        else:
            self.link.post(node_channel(fan.origin), encode_delivered(*_fields(report)))

    async def _claim(self, key: str, *, force: bool = False) -> bool:
        """Win ``key`` (SET NX; plain SET with ``force``) for this node; False if another node did or Redis
        is unavailable."""
        try:
            return bool(
                await self.link.command(
                    lambda r: r.set(key, self.node_id, nx=not force, px=self.pending_ttl_ms)
                )
            )
        except BackendUnavailable:
            return False

    async def _on_node_message(self, data: bytes) -> None:
        try:
            msg = decode_node_message(data)
        except ProtocolError:
            log.warning("ignored a malformed node message")
            return
        if isinstance(msg, DeliveryReport):
            self._on_report(msg)
            return
        request_id, outcome = msg
        # The script already checked channel and "first answer wins"; a miss here means the webhook
        # finished (timed out) a moment ago.
        if self.pending.resolve(request_id, outcome) is Resolution.OK:
            tally = self._tallies.get(request_id)
            if tally is not None:
                tally.answer_arrived()

    def _on_report(self, report: DeliveryReport) -> None:
        tally = self._tallies.get(report.request_id)
        if tally is not None:
            tally.add(report)


#: How long ``WAIT`` may take for a buffered event's replicas, in ms (below the 1 s socket timeout).
WAIT_MS = 500

#: How far before a subscriber's cursor the catch-up looks for unacked entries, in ms.
CATCH_UP_MARGIN_MS = 5_000


@dataclass
class _CatchUp:
    """One subscriber's catch-up after a Redis outage: channels left (with their cursors), keys sent."""

    sub: Subscriber
    cursors: dict[str, str | None]
    replayed: set[tuple[str, str]] = field(default_factory=set)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fields(report: DeliveryReport) -> tuple[str, int, bool]:
    return report.request_id, report.subscribers, report.protocol2
