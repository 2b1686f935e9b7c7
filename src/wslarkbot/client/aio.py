"""``AsyncClient``: the asyncio core of the bot-side WebSocket client.

One WebSocket to the relay carries the envelopes of every bot of the client:
``{ws}://{server}/sub/{app_id1,app_id2}?proto=2`` (app mode) or ``/sub/{org_name}?proto=2`` with basic
auth (org mode, dispatching by the envelope's ``x-app-id``). The first frame decides the protocol: a
``hello`` means protocol 2 (replies and acks on the socket), an envelope means an original nchan relay
(replies by ``POST /sub/<request_id>``, no acks). See :mod:`wslarkbot.wire` and
:mod:`wslarkbot.client.dispatch` for what is answered when.

Reconnection is a loop with a jittered, injectable backoff that resets after a *good* connection (one
that delivered a ``hello`` or stayed up ``stable_after`` seconds): :mod:`wslarkbot.client.loop`.

HTTP 401/403 on the handshake (wrong org password) is logged at error level and retried every
``auth_retry_delay`` seconds (default 60: the relay may be restarted with a fixed htpasswd); pass
``auth_retry_delay=None`` to stop instead (``run()`` raises :class:`RelayAuthError`).

Dead connections are found by WebSocket pings (``ping_interval``/``ping_timeout``, RFC 6455 §5.5.2),
which our relay and nchan both answer; the client sends no text ``PING`` (docs/client.md, "Heartbeats").
A text ``PING`` from the relay is answered with ``PONG``.

Example::

    async with AsyncClient(bot, server="relay.example.com") as client:
        await client.wait_ready()
        ...                      # the client runs in a task until the block ends
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl as ssl_module
import threading
from collections.abc import Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from types import TracebackType

import httpx

from .. import wire
from ..exceptions import ConfigurationError, FeishuAPIError
from ..openapi import AsyncOpenAPIClient
from .backoff import ReconnectPolicy, backoff
from .config import Endpoint, resolve_endpoint
from .connection import Connection, ConnectOptions, ReconnectGaveUp, RelayAuthError, ssl_context
from .dispatch import BotLike, Dispatcher
from .loop import ConnectionLoop
from .resume import ResumeCursor
from .sinks import HttpReplySink, WebSocketReplySink
from .status import ClientStatus

__all__ = ["AsyncClient", "ReconnectGaveUp", "RelayAuthError"]

logger = logging.getLogger("wslarkbot.client")


class AsyncClient(ConnectionLoop):
    """Connects bots to a wslarkbot relay (or an original nginx+nchan relay) and runs their handlers.

    Args:
        *bot: ``Bot`` instances (anything with ``app_id``, ``parse`` and ``aprocess_message``).
        bots: more bots (the original's ``bots=`` list).
        server: ``host[:port]``, no scheme; default ``$WSLARKBOT_SERVER`` (else ConfigurationError).
        protocol: ``"https"`` (wss) or ``"http"`` (ws); default ``$WSLARKBOT_PROTOCOL``, else http for
            localhost/127.x servers and https otherwise.
        org_name / org_passwd: org mode: subscribe to the organisation's channel (``org_...``) with basic
            auth; envelopes are dispatched by their ``x-app-id``.
        reconnect_delays: policy (see :mod:`~wslarkbot.client.backoff`); default full-jitter backoff
            0.5 s doubling to 30 s, forever.
        auth_retry_delay: seconds between attempts after HTTP 401/403; None: stop with RelayAuthError.
        stable_after: a connection up this long (or that sent a hello) resets the backoff.
        ping_interval / ping_timeout / open_timeout: WebSocket keepalive and handshake timeouts.
        close_timeout: seconds a closing connection waits for the relay's close frame (after a ping
            timeout, at stop) before dropping the TCP connection.
        max_workers: threads for ``def`` handlers (ignored when ``executor`` is given).
        max_in_flight: envelopes handled at once; beyond it the client stops reading (backpressure).
        ack_after: seconds after receipt at which a still-running event is acked (protocol 2).
        ack_failures: ack an event whose handler raised (before ``ack_after``) as if it succeeded: Feishu
            is answered 200 and does not deliver it again. Default False: the client sends a ``nack``,
            the relay answers Feishu 500 at once, and Feishu delivers it again (docs/delivery.md).
        shutdown_grace: seconds ``stop()`` lets in-flight handlers finish and answer.
        reply_wait: seconds an answer waits for a reconnection before being dropped.
        max_size: largest frame accepted from the relay, in bytes.
        executor: run ``def`` handlers here instead of a private ThreadPoolExecutor (not shut down).
        group: join this subscriber group (``?group=``): each event goes to one connection of the group
            (docs/delivery.md); None: every event comes to this client.
        ssl: for ``https`` (wss): an :class:`ssl.SSLContext`, or the path of a CA bundle (PEM) to trust
            (a private CA); None: the system's store (``$SSL_CERT_FILE`` works too).
        check_credentials: at start, fetch each bot's tenant_access_token once, so a wrong App Secret
            is logged (error) before any event arrives, not at the first reply after Feishu got its 200;
            a bot without ``app_secret`` gets a warning (it can receive, not reply). Never stops the
            client.

    The client remembers the last message id it received per channel and reconnects with ``?since=``, so
    a relay that buffers the channel replays exactly what was missed (docs/delivery.md).

    Raises:
        ConfigurationError: no server, bad protocol, a bot without ``app_id``, duplicate app ids.
    """

    def __init__(
        self,
        *bot: BotLike,
        bots: Iterable[BotLike] | None = None,
        server: str | None = None,
        protocol: str | None = None,
        org_name: str = "",
        org_passwd: str = "",
        reconnect_delays: ReconnectPolicy | None = None,
        auth_retry_delay: float | None = 60.0,
        stable_after: float = 10.0,
        ping_interval: float | None = 10.0,
        ping_timeout: float | None = 10.0,
        open_timeout: float = 10.0,
        close_timeout: float | None = 10.0,
        max_workers: int = 16,
        max_in_flight: int = 64,
        ack_after: float = 2.5,
        ack_failures: bool = False,
        shutdown_grace: float = 10.0,
        reply_wait: float = 5.0,
        max_size: int = 4 * 1024 * 1024,
        executor: Executor | None = None,
        group: str | None = None,
        ssl: ssl_module.SSLContext | str | os.PathLike[str] | None = None,
        check_credentials: bool = True,
    ) -> None:
        self.endpoint: Endpoint = resolve_endpoint(server, protocol, org_name=org_name, org_passwd=org_passwd)
        if group is not None and not wire.CHANNEL_RE.match(group):
            raise ConfigurationError(f"invalid group name {group!r}: letters, digits, '_', '.', '-'")
        self.group = group
        #: last message id per channel and the message of each request id (resume after reconnects).
        self.cursor = ResumeCursor()
        self._bots: dict[str, BotLike] = {}
        for b in (*bot, *(bots or ())):
            self._register(b)
        if max_workers < 1:
            raise ConfigurationError(f"max_workers must be >= 1, got {max_workers}")
        if auth_retry_delay is not None and auth_retry_delay < 0:
            raise ConfigurationError("auth_retry_delay must be >= 0 or None")
        self._policy: ReconnectPolicy = reconnect_delays or backoff
        self._auth_retry_delay = auth_retry_delay
        self._stable_after = stable_after
        self._connect_options = ConnectOptions(
            open_timeout=open_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_size=max_size,
            close_timeout=close_timeout,
            ssl=ssl_context(ssl),
        )
        self._max_workers = max_workers
        self._max_in_flight = max_in_flight
        self._ack_after = ack_after
        self._ack_failures = ack_failures
        self._shutdown_grace = shutdown_grace
        self._reply_wait = reply_wait
        self._user_executor = executor
        self._check_credentials = check_credentials
        self.status = ClientStatus()
        # Cross-thread stop requests (sync Client.stop) before or while run() sets up its loop.
        self._lock = threading.Lock()
        self._stop_requested = False
        self._forced = False
        self._stop_deadline: float | None = None  # loop time at which the shutdown grace ends
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._interrupt: asyncio.Event | None = None  # stop or resubscribe: leave the current connection
        self._ready: asyncio.Event | None = None  # a protocol-2 connection is open
        self._conn: Connection | None = None
        self._dispatcher: Dispatcher | None = None
        self._runner: asyncio.Task[None] | None = None
        self._finished: asyncio.Event | None = None  # set when run() returns

    # -- bots ----------------------------------------------------------------------------------------

    def _register(self, bot: BotLike) -> None:
        app_id = getattr(bot, "app_id", None)
        if not isinstance(app_id, str) or not app_id:
            raise ConfigurationError(f"{bot!r} has no app_id")
        if app_id in self._bots and self._bots[app_id] is not bot:
            raise ConfigurationError(f"two bots with app_id {app_id!r}")
        self._bots[app_id] = bot

    @property
    def bots(self) -> list[BotLike]:
        """The bots, in the order they were added."""
        return list(self._bots.values())

    def hook_urls(self) -> dict[str, str]:
        """``{app_id: URL to paste into the Feishu console}``."""
        return {app_id: self.endpoint.hook_url(app_id) for app_id in self._bots}

    def add_bot(self, bot: BotLike) -> None:
        """Add a bot, also while running. App mode reconnects to subscribe to the new channel list
        (handlers in flight keep running and answer on the new connection); org mode just dispatches
        the new app id. Call it from the client's event loop (the sync ``Client`` does that for you).
        """
        new = bot.app_id not in self._bots
        self._register(bot)
        logger.info("bot %s added; hook URL %s", bot.app_id, self.endpoint.hook_url(bot.app_id))
        if new and not self.endpoint.org_mode and self._interrupt is not None:
            self._interrupt.set()

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._loop is not None

    def request_stop(self, *, force: bool = False) -> None:
        """Ask ``run()`` to stop; safe from any thread and before ``run()`` starts. Returns at once.

        ``force`` skips the grace period: envelopes in flight are cancelled unanswered (a ``def``
        handler already running in a thread still runs to its end; Python waits for it at exit).
        """
        with self._lock:
            self._stop_requested = True
            self._forced = self._forced or force
            loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._signal_stop)

    def _signal_stop(self) -> None:
        if self._stop_deadline is None and self._loop is not None:
            self._stop_deadline = self._loop.time() + self._shutdown_grace
        if self._stop_event is not None:
            self._stop_event.set()
        if self._interrupt is not None:
            self._interrupt.set()
        if self._forced and self._dispatcher is not None:
            self._dispatcher.cancel()

    def _grace(self) -> float:
        """What is left of ``shutdown_grace`` since the stop was requested (one grace per stop, however
        many places wait for handlers)."""
        if self._forced:
            return 0.0
        if self._stop_deadline is None or self._loop is None:
            return self._shutdown_grace
        return max(0.0, self._stop_deadline - self._loop.time())

    async def stop(self) -> None:
        """Stop (graceful: in-flight handlers get ``shutdown_grace`` seconds) and wait for ``run()``
        when it runs on this event loop. Errors of ``run()`` are raised by ``run()``, not here."""
        self.request_stop()
        finished = self._finished
        if finished is not None and self._loop is asyncio.get_running_loop():
            await finished.wait()

    async def __aenter__(self) -> AsyncClient:
        self._runner = asyncio.create_task(self.run(), name="wslarkbot-client")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        runner = self._runner
        self.request_stop()
        if runner is not None:
            try:
                await runner
            finally:
                self._runner = None

    def _start_credential_checks(self) -> list[asyncio.Task[None]]:
        """Warn about bots without an App Secret; check the others' credentials in the background (with
        ``check_credentials``), and ask Feishu for the ``app_ticket`` of store apps that have none."""
        tasks = []
        for bot in self._bots.values():
            store = getattr(bot, "app_type", "self_built") == "store"
            if not (self._check_credentials or store):
                continue
            if not getattr(bot, "app_secret", None):
                logger.warning(
                    "bot %s has no app_secret: it receives events, but replying or any other OpenAPI call "
                    "will fail (Bot(app_id, app_secret=...))",
                    bot.app_id,
                )
                continue
            new_api = getattr(bot, "new_async_api", None)  # a Bot (a BotLike need not make clients)
            if callable(new_api):
                # A client of its own, closed after the check: the bot's async_api would be bound to this
                # loop, which a sync Client ends when it stops.
                api = new_api()
                tasks.append(asyncio.ensure_future(_check_credentials(bot.app_id, api, str(bot.host))))  # type: ignore[attr-defined]
        return tasks

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until a connection is open and its protocol known (hello, or a first envelope)."""
        return await asyncio.to_thread(
            self.status.wait_for, lambda s: s.connected and s.protocol is not None, timeout
        )

    async def run(self) -> None:
        """Connect and serve until :meth:`stop` (or until the reconnect policy gives up).

        Raises:
            RelayAuthError: HTTP 401/403 and ``auth_retry_delay`` is None.
            ReconnectGaveUp: the reconnect policy ran out of delays.
            ConfigurationError: already running, or no bot.
        """
        with self._lock:
            if self._loop is not None:
                raise ConfigurationError("this client is already running")
            self._loop = asyncio.get_running_loop()
            stop_requested = self._stop_requested
        self._stop_event = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._ready = asyncio.Event()
        finished = self._finished = asyncio.Event()
        if stop_requested:
            self._signal_stop()
        executor = self._user_executor or ThreadPoolExecutor(
            self._max_workers, thread_name_prefix="wslarkbot-handler"
        )
        self._dispatcher = Dispatcher(
            executor=executor,
            max_in_flight=self._max_in_flight,
            ack_after=self._ack_after,
            status=self.status,
            ack_failures=self._ack_failures,
        )
        checks = self._start_credential_checks()
        http = httpx.AsyncClient()
        opts = self._connect_options
        ws_sink = WebSocketReplySink(
            self._current_ws,
            self.status,
            self.cursor.ref,
            # the longest a dead connection goes unnoticed: what may have been lost with it
            resend_window=(opts.ping_interval or 10.0) + (opts.ping_timeout or 10.0),
        )
        http_sinks = (
            HttpReplySink(http, self.endpoint, self.status),
            HttpReplySink(http, self.endpoint, self.status, acks=True),
        )
        try:
            await self._connect_loop(ws_sink, http_sinks)
        finally:
            try:
                await self._dispatcher.drain(self._grace())
                await self._dispatcher.cancel_all()
            finally:
                for check in checks:
                    check.cancel()
                await asyncio.gather(*checks, return_exceptions=True)
                if executor is not self._user_executor:
                    executor.shutdown(wait=False, cancel_futures=True)
                await http.aclose()
                with self._lock:
                    self._loop = None
                    self._stop_requested = self._forced = False
                    self._stop_deadline = None
                self._stop_event = self._interrupt = self._ready = self._finished = None
                self.status.update(connected=False, protocol=None)
                finished.set()
                logger.info("client stopped")


async def _check_credentials(app_id: str, api: AsyncOpenAPIClient, host: str) -> None:
    """Fetch one tenant_access_token with ``api`` (closed after); log what went wrong, if anything.

    A store app has no tenant of its own: with an ``app_ticket`` kept, its app_access_token is fetched;
    without one, Feishu is asked to resend it (the bot stores the ``app_ticket`` event that follows).
    """
    try:
        async with api:
            if api.app_type != "store":
                await asyncio.wait_for(api.tenant_access_token(), 15.0)
            elif api.has_app_ticket():
                await asyncio.wait_for(api.app_access_token(), 15.0)
            else:
                await asyncio.wait_for(api.resend_app_ticket(), 15.0)
                logger.info("asked Feishu to resend the app_ticket of store app %s", app_id)
    except FeishuAPIError as exc:
        logger.error(
            "Feishu refused the credentials of %s (code %s: %s): check its app_secret (and the OpenAPI "
            "host, %s); replies will fail until then",
            app_id,
            exc.code,
            exc.msg,
            host,
        )
    except (httpx.HTTPError, OSError, asyncio.TimeoutError) as exc:
        logger.warning(
            "could not check the credentials of %s (%s: %s): is the OpenAPI host %s reachable?",
            app_id,
            type(exc).__name__,
            str(exc)[:200],
            host,
        )
    else:
        logger.debug("credentials of %s checked: a tenant_access_token was issued", app_id)
