"""One relay node's link to Redis: a command pool and one pub/sub connection, with an explicit up/down state.

Needs the ``redis`` extra (``pip install 'wslarkbot[redis]'``); imported only when ``--redis`` is set.

States and transitions (each transition logged once, never per request)::

    connecting --(node channel + every wanted channel subscribed)--> up
    up --(pub/sub connection lost)--> down --(jittered backoff 0.1 s .. 2 s)--> connecting

* **up**: the pub/sub connection is subscribed to this node's channel and to the fan-out channel of every
  relay channel with local subscribers (:meth:`RedisLink.listen` / :meth:`RedisLink.unlisten`).
* **down**: :meth:`RedisLink.command` raises :class:`~.limits.BackendUnavailable` at once (the relay answers
  503 + ``Retry-After``; Feishu retries), nothing is queued; WebSockets stay open. Reconnecting resubscribes
  everything wanted.
* Commands fail fast: no client-side retries, 1 s socket timeouts; TCP keepalive finds half-open links.
* Delivery reports and key deletions go through a bounded outbox (:meth:`RedisLink.post`,
  :meth:`RedisLink.forget`), sent in pipelined batches; when it is full they are dropped (a report's
  publisher then treats the delivery as unconfirmed; keys expire anyway), never queued without bound.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .limits import BackendUnavailable
from .redis_url import make_client

__all__ = ["RedisLink", "backoff_delays", "redact_url"]

log = logging.getLogger("wslarkbot.relay.redis")

T = TypeVar("T")
#: Errors that mean "Redis is not usable right now" (the relay answers 503, the link reconnects).
LINK_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def redact_url(url: str) -> str:
    """``url`` without its password, for logs (``redis://:***@host:6379/0``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def backoff_delays(first: float = 0.1, cap: float = 2.0) -> Iterator[float]:
    """Exponential delays with jitter (50-100 % of ``first * 2**n``, at most ``cap``), forever."""
    delay = first
    while True:
        yield delay * random.uniform(0.5, 1.0)
        delay = min(cap, delay * 2)


def _keepalive_options() -> dict[int, int]:
    opts: dict[int, int] = {}
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            opts[getattr(socket, name)] = value
    return opts


class RedisLink:
    """Commands and pub/sub for one node. All methods run on the relay's event loop.

    Args:
        url: ``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://`` URL (:mod:`.redis_url`).
        node_channel: this node's own pub/sub channel (always subscribed).
        on_message: awaited for every pub/sub message ``(redis channel, data)``, in order.
        on_down: called (synchronously) when the link goes down from up, before anything else runs.
        on_up: called (synchronously) every time the link comes up, before the next pub/sub message is
            handled: what the node missed while down can be fetched while live frames are held back.
        timeout: socket and subscribe-confirmation timeout, seconds.
        outbox_size: most delivery reports waiting to be sent.
    """

    def __init__(
        self,
        url: str,
        node_channel: str,
        on_message: Callable[[str, bytes], Awaitable[None]],
        *,
        timeout: float = 1.0,
        outbox_size: int = 10_000,
        client_name: str = "wslarkbot",
        on_down: Callable[[], None] | None = None,
        on_up: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.shown_url = redact_url(url)
        self.node_channel = node_channel
        self.on_message = on_message
        self.on_down = on_down
        self.on_up = on_up
        self.timeout = timeout
        self.client: aioredis.Redis = make_client(
            url,
            protocol=2,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            socket_keepalive=True,
            socket_keepalive_options=_keepalive_options(),
            retry=Retry(NoBackoff(), 0),
            client_name=client_name,
        )
        self._wanted: set[str] = set()
        self._live: set[str] = set()
        self._sent: dict[str, int] = {}
        self._acked: dict[str, int] = {}
        self._generation = 0
        self._pubsub: Any = None
        self._up = False
        self._logged_state = ""
        self._changed = asyncio.Condition()
        #: (channel, data) to PUBLISH or (key, None) to DEL, sent in pipelined batches by _send_outbox.
        self._outbox: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue(outbox_size)
        self._outbox_full_logged = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def connected(self) -> bool:
        """Whether the link is up (subscribed to everything wanted)."""
        return self._up

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self, wait: float = 5.0) -> None:
        """Start connecting; return once up, or after ``wait`` seconds (then keep trying in background)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._supervise()), loop.create_task(self._send_outbox())]
        await self.wait_up(wait)  # if not up by then, _log_state has said why

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._drop_pubsub()
        self._up = False
        await self.client.aclose()

    async def wait_up(self, timeout: float) -> bool:
        """Wait until the link is up; False after ``timeout`` seconds."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._up), timeout)
            except asyncio.TimeoutError:
                return False
        return True

    # --- commands -----------------------------------------------------------------------------------

    async def command(self, call: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """Run ``call(client)``.

        Raises:
            BackendUnavailable: the link is down, or the command failed (connection, timeout, error reply).
        """
        if not self._up:
            raise BackendUnavailable()
        try:
            return await call(self.client)
        except LINK_ERRORS as exc:
            log.debug("redis command failed: %s", type(exc).__name__)
            raise BackendUnavailable() from None

    def post(self, channel: str, data: bytes) -> None:
        """PUBLISH ``data`` soon, without waiting (dropped when down or when the outbox is full)."""
        self._queue(channel, data)

    def forget(self, key: str) -> None:
        """DEL ``key`` soon, without waiting (best effort: keys written by the hub also expire)."""
        self._queue(key, None)

    def _queue(self, name: str, data: bytes | None) -> None:
        if not self._up:
            return
        try:
            self._outbox.put_nowait((name, data))
        except asyncio.QueueFull:
            if not self._outbox_full_logged:
                self._outbox_full_logged = True
                log.warning("redis outbox full (%d messages): dropping some", self._outbox.maxsize)

    async def _send_outbox(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty() and len(batch) < 512:
                batch.append(self._outbox.get_nowait())
            self._outbox_full_logged = False
            try:
                pipe = self.client.pipeline(transaction=False)
                for name, data in batch:
                    if data is None:
                        pipe.delete(name)
                    else:
                        pipe.publish(name, data)
                await pipe.execute()
            except LINK_ERRORS as exc:
                log.debug("dropped %d redis messages: %s", len(batch), type(exc).__name__)

    # --- subscriptions ------------------------------------------------------------------------------

    async def listen(self, channels: Iterable[str]) -> None:
        """Make sure this node receives ``channels`` (Redis pub/sub names); return once Redis confirmed.

        Raises:
            BackendUnavailable: the link is down, or Redis did not confirm within the timeout.
        """
        channels = list(channels)
        self._wanted.update(channels)
        if not self._up:
            raise BackendUnavailable()
        need = [ch for ch in channels if ch not in self._live]
        if not need:
            return
        generation, pubsub = self._generation, self._pubsub
        targets = {}
        for ch in need:
            self._sent[ch] = targets[ch] = self._sent.get(ch, 0) + 1

        def done() -> bool:
            return self._generation != generation or all(
                self._acked.get(c, 0) >= n for c, n in targets.items()
            )

        try:
            await asyncio.wait_for(pubsub.subscribe(*need), self.timeout)
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(done), self.timeout)
        except LINK_ERRORS:
            raise BackendUnavailable() from None
        if self._generation != generation:
            raise BackendUnavailable()

    def unlisten(self, channels: Iterable[str]) -> None:
        """Stop receiving ``channels`` (the caller has no local subscriber left on them)."""
        gone = [ch for ch in channels if ch in self._wanted]
        if not gone:
            return
        self._wanted.difference_update(gone)
        self._live.difference_update(gone)
        for ch in gone:  # forget the counters unless a SUBSCRIBE is still unconfirmed (bounded memory)
            if self._acked.get(ch, 0) >= self._sent.get(ch, 0):
                self._sent.pop(ch, None)
                self._acked.pop(ch, None)
        if self._up and self._pubsub is not None:
            task = asyncio.get_running_loop().create_task(self._unsubscribe(self._pubsub, gone))
            self._tasks.append(task)
            task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    async def _unsubscribe(self, pubsub: Any, channels: list[str]) -> None:
        try:
            await asyncio.wait_for(pubsub.unsubscribe(*channels), self.timeout)
        except LINK_ERRORS:
            pass  # the connection is going down; a new one subscribes only what is wanted

    # --- the pub/sub connection ---------------------------------------------------------------------

    async def _supervise(self) -> None:
        delays = backoff_delays()
        while True:
            try:
                await self._connect_and_read()
            except Exception as exc:  # LINK_ERRORS, and anything unexpected from the client: reconnect
                if not isinstance(exc, LINK_ERRORS):
                    log.exception("unexpected error on the redis pub/sub connection")
                if await self._went_down(f"{type(exc).__name__}: {str(exc)[:200]}"):
                    delays = backoff_delays()  # it was up: start again from the shortest delay
            await asyncio.sleep(next(delays))
            log.debug("reconnecting to redis %s", self.shown_url)

    async def _connect_and_read(self) -> None:
        pubsub = self.client.pubsub()
        self._pubsub = pubsub
        self._generation += 1
        self._live.clear()
        self._acked.clear()
        initial = [self.node_channel, *sorted(self._wanted)]
        self._sent = dict.fromkeys(initial, 1)
        await asyncio.wait_for(pubsub.subscribe(*initial), self.timeout)
        while True:
            msg = await pubsub.get_message(timeout=None)
            if msg is None:
                continue
            kind = msg["type"]
            channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else str(msg["channel"])
            if kind == "message":
                try:
                    await self.on_message(channel, msg["data"])
                except Exception:  # a bug must not take the link down with it
                    log.exception("error handling a redis message on %s", channel)
            elif kind == "subscribe":
                await self._confirmed(channel)

    async def _confirmed(self, channel: str) -> None:
        async with self._changed:
            self._acked[channel] = self._acked.get(channel, 0) + 1
            if self._acked[channel] >= self._sent.get(channel, 0) and channel in self._wanted:
                self._live.add(channel)
            if not self._up and all(self._acked.get(c, 0) >= n for c, n in self._sent.items()):
                self._up = True
                self._log_state("up", len(self._live))
                if self.on_up is not None:
                    self.on_up()
            self._changed.notify_all()

    async def _went_down(self, reason: str) -> bool:
        """Mark the link down; returns whether it was up."""
        was_up = self._up
        if was_up and self.on_down is not None:
            self.on_down()
        async with self._changed:
            self._up = False
            self._generation += 1
            self._changed.notify_all()
        await self._drop_pubsub()
        self._log_state("down", reason)
        return was_up

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await asyncio.wait_for(pubsub.aclose(), self.timeout)
            except (*LINK_ERRORS, RuntimeError):
                pass

    def _log_state(self, state: str, detail: object) -> None:
        previous, self._logged_state = self._logged_state, state
        if state == previous:
            return
        if state == "up":
            log.info(
                "redis %s %s: subscribed to %d relay channels",
                self.shown_url,
                "connection restored" if previous == "down" else "connected",
                detail,
            )
        else:
            log.error(
                "redis %s unavailable (%s): webhooks are answered 503 until it is back; reconnecting",
                self.shown_url,
                detail,
            )
