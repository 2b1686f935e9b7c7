"""The connection loop of :class:`~wslarkbot.client.aio.AsyncClient`: connect, serve one connection, read
its frames, hand envelopes to the dispatcher, reconnect.

Reconnection is a loop, not recursion. We do not use websockets' ``async for ws in connect(...)``
iterator here, although STYLE.md holds it up as the model: it reconnects *immediately* after a connection
that opened and then dropped (a relay that accepts and closes would be hammered), resets its backoff after
every handshake, and its delays cannot be injected. The loop below keeps the model's ideas -- a
``process_exception``-like classification (the ``except`` clauses of ``_connect_loop``) and a jittered
:func:`~wslarkbot.client.backoff.backoff` that resets after a good connection -- with an injectable
policy. A *good* connection delivered a ``hello`` or stayed up ``stable_after`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .. import wire
from ..exceptions import ConfigurationError, ProtocolError
from .backoff import ReconnectPolicy, constant
from .config import Endpoint
from .connection import (
    Connection,
    ConnectOptions,
    ReconnectGaveUp,
    RelayAuthError,
    close_reason,
    describe_failure,
    open_connection,
)
from .dispatch import BotLike, Dispatcher, ReplySink
from .resume import ResumeCursor
from .status import ClientStatus

__all__ = ["RECONNECT_AT_ONCE", "ConnectionLoop"]

#: Close codes after which the client reconnects without waiting: the relay node restarts (1012, it drains
#: on SIGTERM) or goes away (1001); behind a load balancer the next attempt reaches another node.
RECONNECT_AT_ONCE = frozenset({1001, 1012})

logger = logging.getLogger("wslarkbot.client")


class ConnectionLoop:
    """The connection half of :class:`~wslarkbot.client.aio.AsyncClient` (a mixin: the state below is set
    by ``AsyncClient.__init__`` and ``AsyncClient.run``, which then awaits :meth:`_connect_loop`)."""

    endpoint: Endpoint
    group: str | None
    cursor: ResumeCursor
    status: ClientStatus
    _bots: dict[str, BotLike]
    _policy: ReconnectPolicy
    _auth_retry_delay: float | None
    _stable_after: float
    _reply_wait: float
    _connect_options: ConnectOptions
    _stop_event: asyncio.Event | None
    _interrupt: asyncio.Event | None  # stop or resubscribe: leave the current connection
    _ready: asyncio.Event | None  # a protocol-2 connection is open
    _conn: Connection | None
    _dispatcher: Dispatcher | None

    def _grace(self) -> float:
        """Seconds left for in-flight handlers at a stop (``AsyncClient`` implements it)."""
        raise NotImplementedError

    def _stopping(self) -> bool:
        return self._stop_event is not None and self._stop_event.is_set()

    async def _connect_loop(self, ws_sink: ReplySink, http_sinks: tuple[ReplySink, ReplySink]) -> None:
        assert self._interrupt is not None and self._stop_event is not None  # set by run()
        delays: Iterator[float] = self._policy()
        while not self._stopping():
            self._interrupt.clear()
            good = False
            at_once: int | None = None  # the close code, when it says "reconnect now"
            error: BaseException | None = None
            app_ids = list(self._bots)
            since = self.cursor.since(self.endpoint.channels(app_ids))
            # ConfigurationError (no bot) ends run()
            url = self.endpoint.sub_url(app_ids, group=self.group, since=since)
            try:
                ws = await open_connection(
                    url,
                    self.endpoint.auth_headers(),
                    self._connect_options,
                    self._stop_event,
                )
                if ws is None:  # stopped while connecting
                    break
                async with ws:
                    good = await self._serve(ws, ws_sink, http_sinks)
                # A relay node draining (1012) or going away (1001): reconnect now, through the load
                # balancer to another node; a refused attempt then backs off as usual.
                at_once = ws.close_code if ws.close_code in RECONNECT_AT_ONCE else None
            except InvalidStatus as exc:
                code = exc.response.status_code
                if code in (401, 403):
                    await self._auth_failed(code)
                    delays = self._policy()
                    continue
                error = exc
                detail = exc.response.body[:200].decode("utf-8", "replace") if exc.response.body else ""
                self._failed(f"handshake refused with HTTP {code} {detail}".rstrip())
            except InvalidURI as exc:
                raise ConfigurationError(f"invalid relay URL: {exc}") from exc
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed, asyncio.TimeoutError) as exc:
                error = exc
                self._failed(describe_failure(exc, tls=self.endpoint.ws_scheme == "wss"))
            except Exception as exc:  # a bug: log it loudly, but keep the bots connected
                error = exc
                logger.exception("unexpected error on the relay connection; reconnecting")
                self._failed(f"{type(exc).__name__}")
            if self._stopping():
                break
            if good:
                delays = self._policy()
            if self._interrupt.is_set():  # resubscribe (add_bot): reconnect at once
                continue
            if at_once is not None and good:  # a good connection only: never a tight loop of reconnects
                logger.info(
                    "relay %s closed %d (restarting); reconnecting now", self.endpoint.server, at_once
                )
                continue
            try:
                delay = next(delays)
            except StopIteration:
                raise ReconnectGaveUp(f"gave up reconnecting to {self.endpoint.server}") from error
            logger.info("reconnecting to %s in %.2fs", self.endpoint.server, delay)
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds or until stopped."""
        assert self._stop_event is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), delay)

    def _failed(self, reason: str) -> None:
        self.status.update(last_error=reason)
        self.status.incr("failures")
        logger.warning("connection to relay %s failed: %s", self.endpoint.server, reason)

    async def _auth_failed(self, code: int) -> None:
        self.status.update(last_error=f"HTTP {code}: subscription refused")
        self.status.incr("failures", "auth_failures")
        who = f"organisation {self.endpoint.org_name!r}" if self.endpoint.org_mode else "these app channels"
        if self._auth_retry_delay is None:
            logger.error(
                "relay %s refused %s (HTTP %s): check org_name/org_passwd; giving up",
                self.endpoint.server,
                who,
                code,
            )
            raise RelayAuthError(f"relay refused the subscription (HTTP {code}): wrong org name or password?")
        logger.error(
            "relay %s refused %s (HTTP %s): check org_name/org_passwd; retrying in %.0fs",
            self.endpoint.server,
            who,
            code,
            self._auth_retry_delay,
        )
        await self._sleep(next(constant(self._auth_retry_delay)))

    async def _serve(
        self, ws: ClientConnection, ws_sink: ReplySink, http_sinks: tuple[ReplySink, ReplySink]
    ) -> bool:
        """Serve one connection until it closes or we are interrupted. Returns True if it was *good*."""
        assert self._interrupt is not None and self._dispatcher is not None and self._ready is not None
        loop = asyncio.get_running_loop()
        conn = Connection(ws, loop.time())
        self._conn = conn
        self.status.update(connected=True, protocol=None)
        self.status.incr("connections")
        channels = ", ".join(self.endpoint.channels(list(self._bots)))
        logger.info("connected to relay %s (%s)", self.endpoint.server, channels)
        receiver = asyncio.create_task(self._receive(conn, ws_sink, http_sinks))
        interrupted = asyncio.create_task(self._interrupt.wait())
        try:
            await asyncio.wait({receiver, interrupted}, return_when=asyncio.FIRST_COMPLETED)
            if receiver.done():
                exc = receiver.exception()
                if exc is not None and not isinstance(exc, ConnectionClosed):
                    raise exc
                self._failed(close_reason(ws))
            else:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await receiver
                if self._stopping():
                    # Graceful stop: stop reading, let handlers answer on this open socket, then close.
                    if not await self._dispatcher.drain(self._grace()):
                        logger.warning("%d handler(s) still running at shutdown", self._dispatcher.in_flight)
                    await ws.close(1001, "client stopping")
                else:
                    await ws.close(1000, "resubscribing")
        finally:
            interrupted.cancel()
            receiver.cancel()
            self._conn = None
            self._ready.clear()
            self.status.update(connected=False)
        return conn.protocol == 2 or loop.time() - conn.opened_at >= self._stable_after

    async def _current_ws(self) -> ClientConnection | None:
        """The open protocol-2 connection, waiting up to ``reply_wait`` s for a reconnection."""
        if self._ready is None or self._stop_event is None:
            return None
        if not self._ready.is_set():
            if self._stopping():
                return None
            waiters = [
                asyncio.ensure_future(self._ready.wait()),
                asyncio.ensure_future(self._stop_event.wait()),
            ]
            try:
                await asyncio.wait(waiters, timeout=self._reply_wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
        conn = self._conn
        if conn is None or conn.protocol != 2 or not self._ready.is_set():
            return None
        return conn.ws

    async def _receive(
        self, conn: Connection, ws_sink: ReplySink, http_sinks: tuple[ReplySink, ReplySink]
    ) -> None:
        """Read frames until the connection closes; hand envelopes to the dispatcher.

        ``http_sinks``: (no acks, acks by POST ``{}``); the second serves unsigned envelopes of an
        original relay, which nchan holds open until something is posted (see ``dispatch``).
        """
        assert self._dispatcher is not None and self._ready is not None
        loop = asyncio.get_running_loop()
        async for frame in conn.ws:
            try:
                msg = wire.parse_server_message(frame)
            except ProtocolError as exc:
                logger.warning("ignoring a frame from the relay that does not parse (%s)", exc)
                continue
            if msg == wire.PING:
                await conn.ws.send(wire.PONG)
            elif isinstance(msg, wire.Hello):
                if conn.protocol is None:
                    conn.protocol = 2
                    self._ready.set()
                    self.status.update(protocol=2)
                    self.status.incr("hellos")
                    logger.info("relay speaks protocol %s; channels %s", msg.protocol, ",".join(msg.channels))
                    resend = getattr(ws_sink, "resend_unconfirmed", None)
                    if resend is not None:
                        await resend(conn.ws)
            elif isinstance(msg, wire.ServerError):
                self.status.incr("server_errors")
                rid = msg.request_id or "-"
                logger.warning("relay refused an answer for request %s: %s", rid, msg.reason)
            elif isinstance(msg, wire.Envelope):
                if conn.protocol is None:
                    conn.protocol = 1
                    self.status.update(protocol=1)
                    logger.info("relay speaks the original protocol: replies by HTTP POST, no acks")
                if conn.protocol == 2:
                    self.cursor.seen(msg)
                    # Our relay waits for a plaintext event's ack as long as for a signed one.
                    await self._dispatch(msg, ws_sink, loop.time())
                else:
                    # An original relay holds unsigned envelopes open only as long as a challenge
                    # (~1 s): their events are acked on receipt by POSTing {} (see dispatch).
                    signed = msg.has_signature
                    sink = http_sinks[0 if signed else 1]
                    await self._dispatch(msg, sink, loop.time(), ack_after=None if signed else 0.0)

    async def _dispatch(
        self, env: wire.Envelope, sink: ReplySink, received_at: float, *, ack_after: float | None = None
    ) -> None:
        assert self._dispatcher is not None
        self.status.incr("received")
        rid = env.request_id or "-"
        bot = self._bots.get(env.app_id)
        if bot is None and not env.app_id and len(self._bots) == 1:
            bot = next(iter(self._bots.values()))  # a relay that does not send x-app-id
        if bot is None:
            self.status.incr("unknown_app")
            logger.warning("request %s: no bot for app id %r here; not acknowledged", rid, env.app_id)
            return
        await self._dispatcher.submit(
            bot, env.to_dict(), sink, request_id=rid, received_at=received_at, ack_after=ack_after
        )
