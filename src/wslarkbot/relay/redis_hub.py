"""``RedisHub``: several relay nodes sharing one Redis (``wslarkbot serve --redis redis://...``, issue 4).

A webhook arriving at any node reaches the subscribers on every node, and an answer (``POST /sub/<id>``,
WebSocket ``reply``/``ack``) arriving at any node reaches the webhook request waiting on another node.
Needs the ``redis`` extra; :func:`~.app.create_app` imports this module only when ``redis_url`` is set.

Design (docs/deploy.md has the operator's view; names and messages are in :mod:`.redis_protocol`):

* **Local state stays local.** Each node keeps its subscribers and waiting requests in an
  :class:`~.hub.InMemoryHub`; Redis carries only what crosses nodes. Nothing is stored per subscriber.
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
* **Later (buffers, resume, competing consumers):** the envelope could also be XADDed to a per-channel
  Redis Stream (``wslarkbot:stream:<channel>``, MAXLEN-capped) and consumer groups would give
  "one bot of the group gets each event" and replay after reconnect; the fan-out and answer paths above
  would stay as they are.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Collection

from ..exceptions import ProtocolError
from .hub import Delivery, Hub, InMemoryHub, Subscriber
from .limits import BackendUnavailable
from .pending import Outcome, PendingEntry, Resolution
from .redis_link import RedisLink
from .redis_protocol import (
    RESOLVE_SCRIPT,
    DeliveryReport,
    Tally,
    channel_of,
    decode_fanout,
    decode_node_message,
    encode_delivered,
    encode_fanout,
    fanout_channel,
    node_channel,
    pending_value,
    request_key,
    resolution_of,
    resolve_args,
)

__all__ = ["RedisHub", "new_node_id"]

log = logging.getLogger("wslarkbot.relay.redis")


def new_node_id() -> str:
    """``<hostname>-<pid>-<random>``: unique per process, readable in Redis and in logs."""
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())[:40] or "node"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class RedisHub(Hub):
    """The hub of one node among several sharing ``url`` (see the module docstring).

    Args:
        url: the Redis URL (may carry a password; never logged).
        pending_ttl: seconds a waiting-request key lives (longest wait + margin; a dead node's keys expire).
        node_id: default :func:`new_node_id`.
        timeout: Redis socket and subscribe-confirmation timeout, seconds.
        start_wait: how long :meth:`start` waits for the first connection; after that the node serves
            (503 for webhooks) and keeps connecting in the background.
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
    ) -> None:
        self.node_id = node_id or new_node_id()
        self.local = InMemoryHub(
            max_subscribers_per_channel=max_subscribers_per_channel,
            max_pending_replies=max_pending_replies,
        )
        self.pending_ttl_ms = max(1, int(pending_ttl * 1000))
        self._node_channel = node_channel(self.node_id)
        self.link = RedisLink(
            url,
            self._node_channel,
            self._on_message,
            timeout=timeout,
            client_name=f"wslarkbot-{self.node_id}",
        )
        self._resolve = self.link.client.register_script(RESOLVE_SCRIPT)
        self._tallies: dict[str, Tally] = {}
        self._start_wait = start_wait

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.link.start(self._start_wait)

    async def close(self) -> None:
        await self.link.close()

    def describe(self) -> dict[str, object]:
        return {"redis": {"node": self.node_id, "url": self.link.shown_url, "connected": self.link.connected}}

    # --- subscribers --------------------------------------------------------------------------------

    async def subscribe(self, sub: Subscriber) -> None:
        """Register locally, then make sure this node receives the channels (Redis confirmed).

        Raises:
            LimitExceeded: a channel is full on this node (503), or Redis is unavailable (503).
        """
        if not self.link.connected:
            raise BackendUnavailable()
        await self.local.subscribe(sub)
        try:
            await self.link.listen(fanout_channel(ch) for ch in sub.channels)
        except BackendUnavailable:
            await self.unsubscribe(sub)
            raise

    async def unsubscribe(self, sub: Subscriber) -> None:
        await self.local.unsubscribe(sub)
        idle = [ch for ch in sub.channels if not self.local.has_subscribers(ch)]
        self.link.unlisten(fanout_channel(ch) for ch in idle)

    async def publish(self, channel: str, frame: str) -> list[Subscriber]:
        """Offer ``frame`` to *this node's* subscribers of ``channel`` (:meth:`deliver` fans out to all)."""
        return await self.local.publish(channel, frame)

    async def deliver(self, channel: str, frame: str, *, request_id: str, timeout: float) -> Delivery:
        tally = self._tallies[request_id] = Tally()
        try:
            nodes = await self.link.command(
                lambda r: r.publish(fanout_channel(channel), encode_fanout(self.node_id, request_id, frame))
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
        entry = await self.local.open_pending(request_id, channel)
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
            await self.local.cancel_pending(request_id)
            raise
        if not claimed:
            await self.local.cancel_pending(request_id)
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
        await self.local.cancel_pending(request_id)
        # Not awaited: the answer to Feishu need not wait for it. Until the DEL lands, a late answer gets
        # "ok" from the script and is dropped here; if it never lands, the key expires after pending_ttl.
        self.link.forget(request_key(request_id))

    def is_pending(self, request_id: str) -> bool:
        return self.local.is_pending(request_id)

    def counts(self) -> dict[str, int]:
        return self.local.counts()

    def subscribers(self) -> list[Subscriber]:
        return self.local.subscribers()

    async def shutdown(self) -> int:
        return await self.local.shutdown()

    # --- messages from Redis ------------------------------------------------------------------------

    async def _on_message(self, redis_channel: str, data: bytes) -> None:
        if redis_channel == self._node_channel:
            await self._on_node_message(data)
            return
        channel = channel_of(redis_channel)
        if channel is None:
            return
        try:
            origin, request_id, frame = decode_fanout(data)
        except ProtocolError:
            log.warning("ignored a malformed fan-out message on %s", redis_channel)
            return
        delivered = await self.local.publish(channel, frame)
        report = DeliveryReport(request_id, len(delivered), any(s.protocol >= 2 for s in delivered))
        if origin == self.node_id:
            self._on_report(report)
        else:
            self.link.post(node_channel(origin), encode_delivered(*_fields(report)))

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
        if await self.local.resolve(request_id, outcome) is Resolution.OK:
            tally = self._tallies.get(request_id)
            if tally is not None:
                tally.answer_arrived()

    def _on_report(self, report: DeliveryReport) -> None:
        tally = self._tallies.get(report.request_id)
        if tally is not None:
            tally.add(report)


def _fields(report: DeliveryReport) -> tuple[str, int, bool]:
    return report.request_id, report.subscribers, report.protocol2
