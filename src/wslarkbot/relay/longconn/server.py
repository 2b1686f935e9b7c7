"""The aiohttp side of the gateway: bootstrap endpoint, WebSocket endpoint, and the webhook adapter.

Routes (long-connection.md §1):

* ``POST /callback/ws/endpoint`` — ``{"AppID","AppSecret"}`` -> ``{"code":0,"data":{"URL","ClientConfig"}}``.
  A wrong secret or unknown app answers HTTP 200 with ``code`` 403 (any code but 0, 1 and 1000040343 is a
  ``ClientException`` in the SDK, which stops instead of retrying).
* ``GET /callback/ws/v2?device_id=&service_id=&token=`` — the WebSocket. Refusals use Feishu's handshake
  headers: a bad ticket ``handshake-status: 403`` (fatal for the SDK), the per-app connection limit
  ``514`` + ``handshake-autherrcode: 1000040350`` (fatal), an expired ticket ``500`` (retried).

Usage inside the relay::

    gateway = Gateway(load_gateway_config(path), redis_url=config.redis_url)   # redis_url: several nodes
    gateway.install(app)                       # routes + shutdown hook
    state.gateway = gateway                    # where the relay's webhook route finds it (gateway_for)
    ...
    answer = await gateway.webhook_answer(app_id, headers, raw)   # body read and size-checked by the relay
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

from ...crypto import secure_equals
from ...exceptions import ConfigurationError
from ...wire import REQUEST_ID_RE
from ..answer import Answer
from ..limits import BackendUnavailable
from ..observe import NULL_OBSERVER, RelayObserver
from .config import GatewayConfig, hash_secret, load_gateway_config
from .registry import ClientRegistry, Connection
from .replay import MemoryReplay, ReplayStore
from .replayer import Replayer
from .router import Router
from .tickets import Ticket, TicketBook, TicketError, TicketExpired, key_from_secret
from .webhook import relay_webhook

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["BOOTSTRAP_PATH", "GATEWAY_KEY", "WS_PATH", "Gateway"]

log = logging.getLogger("wslarkbot.relay.longconn")

BOOTSTRAP_PATH = "/callback/ws/endpoint"
WS_PATH = "/callback/ws/v2"

CODE_OK = 0
CODE_BAD_CREDENTIALS = 403  # not 0 / 1 / 1000040343 -> ClientException in lark-oapi (client.py 295-303)
HANDSHAKE_FORBIDDEN = 403
HANDSHAKE_AUTH_FAILED = 514
AUTHERR_EXCEED_CONN_LIMIT = 1000040350


def _refusal(
    http_status: int, handshake_status: int, msg: str, autherrcode: int | None = None
) -> web.Response:
    """A non-101 handshake answer the SDK parses (client.py ``_parse_ws_conn_exception``)."""
    headers = {"handshake-status": str(handshake_status), "handshake-msg": msg}
    if autherrcode is not None:
        headers["handshake-autherrcode"] = str(autherrcode)
    response = web.json_response({"code": handshake_status, "msg": msg}, status=http_status, headers=headers)
    # Close after the answer: websockets waits for the server to drop a refused handshake (10 s otherwise).
    response.force_close()
    return response


class Gateway:
    """Feishu's long-connection protocol served by the relay, for unmodified lark-oapi bots.

    Args:
        redis_url: the relay's ``--redis``: tickets, connection limits, delivery and the replay buffer are
            then shared with the other nodes (cluster.py); needs ``ticket_secret`` in the config.
        node_id: this node's name in Redis (default: host-pid-random).

    Raises:
        ConfigurationError: ``redis_url`` without ``ticket_secret``; the ``redis`` package missing.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clients: ClientRegistry | None = None,
        tickets: TicketBook | None = None,
        redis_url: str | None = None,
        node_id: str | None = None,
    ) -> None:
        self.config = config
        self.clients = clients or ClientRegistry(config)
        if redis_url and not config.ticket_secret:
            raise ConfigurationError(
                "the gateway needs ticket_secret in [gateway] with --redis (tickets validate on every node)"
            )
        key = key_from_secret(config.ticket_secret) if config.ticket_secret else None
        self.tickets = tickets or TicketBook(config.ticket_ttl, key=key)
        self.cluster: Cluster | None = None
        store: ReplayStore = MemoryReplay()
        if redis_url:
            try:
                from .cluster import Cluster  # imports redis: only with --redis
            except ImportError as exc:
                raise ConfigurationError(f"--redis needs the redis extra ({exc.name} is missing)") from None
            self.cluster = Cluster(redis_url, self._on_cluster_message, node_id=node_id)
            store = self.cluster.replay
        self.router = Router(self.clients, self.cluster)
        self.replayer = Replayer(config, self.clients, store, self.cluster)
        self._sockets: set[web.WebSocketResponse] = set()
        #: told about each webhook answered here (metrics, dashboard); the relay's admin.install sets it.
        self.observer: RelayObserver = NULL_OBSERVER

    def reload_config(self, path: str) -> None:
        """Re-read the gateway config file (SIGHUP): apps added, removed or changed, timeouts and client
        settings take effect for new connections and webhooks; the ticket secret and TTL need a restart
        (tickets already issued must stay valid). Clients of a removed app keep their connection until it
        closes; they are refused when they come back.

        Raises:
            ConfigurationError: the file does not load or check (nothing changes).
        """
        new = load_gateway_config(path)
        for name in ("ticket_secret", "ticket_ttl"):
            if getattr(new, name) != getattr(self.config, name):
                log.warning("gateway config: %s changed; needs a restart (the running value is kept)", name)
        old = self.config
        new = dataclasses.replace(new, ticket_secret=old.ticket_secret, ticket_ttl=old.ticket_ttl)
        added = sorted(set(new.apps) - set(self.config.apps))
        removed = sorted(set(self.config.apps) - set(new.apps))
        self.config = self.clients.config = self.replayer.config = new
        log.info("gateway config reloaded: %d apps (added %s, removed %s)", len(new.apps), added, removed)

    def serves(self, app_id: str) -> bool:
        """Whether webhooks for ``app_id`` go to long-connection clients."""
        return app_id in self.config.apps

    def counts(self) -> dict[str, int]:
        """Open connections per gateway app (for ``/status``)."""
        return {app_id: len(self.clients.connections(app_id)) for app_id in self.config.apps}

    def routes(self) -> list[web.RouteDef]:
        return [web.post(BOOTSTRAP_PATH, self.handle_bootstrap), web.get(WS_PATH, self.handle_ws)]

    def install(self, app: web.Application) -> None:
        """Add :meth:`routes`, store the gateway as ``app[GATEWAY_KEY]``, start with the app, close client
        sockets on shutdown and the Redis link on cleanup."""
        app[GATEWAY_KEY] = self
        app.add_routes(self.routes())
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)

    async def _on_startup(self, _app: web.Application) -> None:
        await self.start()

    async def _on_shutdown(self, _app: web.Application) -> None:
        await self.close()

    async def _on_cleanup(self, _app: web.Application) -> None:
        if self.cluster is not None:
            await self.cluster.close()

    async def start(self) -> None:
        """Connect to Redis (if clustered) and start the replay lease renewal."""
        if self.cluster is not None:
            await self.cluster.start()
        self.replayer.start()

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"relay shutting down")
        await self.replayer.close()
        await self.clients.close()

    async def _on_cluster_message(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "deliver":
            await self.router.serve(message)
        elif op == "entry":
            await self.replayer.take(message)
        elif op == "wake":
            self.replayer.wake(str(message.get("app")))

    # --- bootstrap --------------------------------------------------------------------------------

    def _ws_base(self, request: web.Request) -> str:
        if self.config.public_url:
            base = self.config.public_url.rstrip("/")
            if base.startswith("http"):
                base = "ws" + base[4:]
            return base
        proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip().lower()
        host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
        return f"{'wss' if proto in ('https', 'wss') else 'ws'}://{host}"

    async def handle_bootstrap(self, request: web.Request) -> web.Response:
        """``POST /callback/ws/endpoint`` (long-connection.md §1 "How the client gets the URL")."""
        try:
            body = await request.json()
            app_id, secret = body["AppID"], body["AppSecret"]
            if not isinstance(app_id, str) or not isinstance(secret, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return web.json_response({"code": CODE_BAD_CREDENTIALS, "msg": "AppID and AppSecret required"})
        app = self.config.apps.get(app_id)
        # Hash even for unknown apps so timing does not tell which app ids are configured.
        ok = app.secret_matches(secret) if app else secure_equals(hash_secret(secret), "0" * 64) and False
        if app is None or not ok:
            log.warning("gateway bootstrap refused for app %r", app_id)
            return web.json_response({"code": CODE_BAD_CREDENTIALS, "msg": "invalid app id or app secret"})
        device_id, token = self.tickets.issue(app_id)
        query = urlencode({"device_id": device_id, "service_id": self.clients.service_id, "token": token})
        url = f"{self._ws_base(request)}{WS_PATH}?{query}"
        data = {"URL": url, "ClientConfig": self.config.client_config()}
        return web.json_response({"code": CODE_OK, "msg": "ok", "data": data})

    # --- websocket --------------------------------------------------------------------------------

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        """``GET /callback/ws/v2``: authenticate the ticket, enforce the limit, then serve frames."""
        try:
            ticket = await self._redeem(request.query.get("token", ""))
        except TicketExpired:
            return _refusal(401, 500, "connection ticket expired, fetch a new endpoint")
        except TicketError:
            return _refusal(403, HANDSHAKE_FORBIDDEN, "invalid connection ticket")
        except BackendUnavailable:
            return _refusal(503, 500, "relay backend unavailable, retry")
        if ticket.app_id not in self.config.apps:
            return _refusal(403, HANDSHAKE_FORBIDDEN, "app is no longer served")
        if self.cluster is not None:
            return await self._serve_clustered(request, ticket)
        if not self.clients.reserve(ticket.app_id):
            limit = self.config.apps[ticket.app_id].max_connections
            log.warning("gateway app %s over its connection limit (%d)", ticket.app_id, limit)
            return _refusal(
                429, HANDSHAKE_AUTH_FAILED, f"exceeded connection limit {limit}", AUTHERR_EXCEED_CONN_LIMIT
            )
        ws = web.WebSocketResponse(heartbeat=self.config.heartbeat or None, max_msg_size=1024 * 1024)
        try:
            await ws.prepare(request)
        except BaseException:
            self.clients.release(ticket.app_id)
            raise
        self.clients.release(ticket.app_id)
        return await self._serve(ws, ticket)

    async def _redeem(self, token: str) -> Ticket:
        """Check the ticket; one-time use in this process, or in Redis across nodes."""
        if self.cluster is None:
            return self.tickets.redeem(token)
        ticket = self.tickets.verify(token)
        if not await self.cluster.consume_ticket(ticket):
            raise TicketExpired("connection ticket already used")
        return ticket

    def _limit_refusal(self, app_id: str) -> web.Response:
        limit = self.config.apps[app_id].max_connections
        log.warning("gateway app %s over its connection limit (%d)", app_id, limit)
        return _refusal(
            429, HANDSHAKE_AUTH_FAILED, f"exceeded connection limit {limit}", AUTHERR_EXCEED_CONN_LIMIT
        )

    async def _serve_clustered(self, request: web.Request, ticket: Ticket) -> web.StreamResponse:
        """The limit counts every node's connections (a Redis sorted set, cluster.py)."""
        assert self.cluster is not None
        app_id = ticket.app_id
        try:
            ok = await self.cluster.reserve(
                app_id, ticket.device_id, self.config.apps[app_id].max_connections
            )
        except BackendUnavailable:
            return _refusal(503, 500, "relay backend unavailable, retry")
        if not ok:
            return self._limit_refusal(app_id)
        unregister = functools.partial(self.cluster.unregister, app_id, ticket.device_id)
        ws = web.WebSocketResponse(heartbeat=self.config.heartbeat or None, max_msg_size=1024 * 1024)
        try:
            await ws.prepare(request)
        except BaseException:
            await unregister()
            raise
        return await self._serve(ws, ticket, on_close=unregister)

    async def _serve(
        self,
        ws: web.WebSocketResponse,
        ticket: Ticket,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> web.WebSocketResponse:
        """Frames of one open connection until it closes; ``on_close`` runs before the registry forgets it."""
        conn = Connection(ticket.app_id, ticket.device_id, ws.send_bytes)
        await self.clients.add(conn)
        self._sockets.add(ws)
        log.info("gateway: %s connected (%s)", ticket.app_id, ticket.device_id)
        self.replayer.wake(ticket.app_id)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    reply = self.clients.receive(conn, msg.data)
                    if reply is not None:
                        await conn.send_raw(reply)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._sockets.discard(ws)
            if on_close is not None:
                await on_close()
            await self.clients.remove(conn)
            log.info("gateway: %s disconnected (%s)", ticket.app_id, ticket.device_id)
        return ws

    # --- webhook ----------------------------------------------------------------------------------

    async def webhook_answer(self, app_id: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answer Feishu's POST whose body the relay has already read (and size-limited).

        Raises:
            KeyError: ``app_id`` is not a gateway app (check :meth:`serves` first).
        """
        app = self.config.apps[app_id]
        started = time.monotonic()
        result = await relay_webhook(
            self.router,
            app,
            headers,
            body,
            timeout=self.config.event_timeout,
            retry_after=self.config.retry_after,
            replayer=self.replayer if app.replay else None,
        )
        request_id = headers.get("X-Request-Id") or headers.get("x-request-id") or ""
        answer = result.answer
        self.observer.webhook_answered(
            app_id,
            request_id if REQUEST_ID_RE.match(request_id) else "-",
            result.kind,
            int(result.outcome.reached_bot),
            answer.status,
            result.outcome,
            time.monotonic() - started,
        )
        return answer


GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("wslarkbot_longconn_gateway", Gateway)
