"""``create_app(config)``: the relay's aiohttp application (routes, state, graceful shutdown).

Routes (docs/protocol.md):

* ``POST /hook/<app_id>``, ``POST /org_<name>/<app_id>``: Feishu's webhooks (:mod:`.publish`);
* ``GET /sub/<ch1,ch2,...>``: WebSocket subscriptions (:mod:`.subscribe`);
* ``POST /sub/<request_id>``: replies of original clients (:mod:`.publish`);

(their aiohttp handlers are in :mod:`.routes`, the fast path's in :mod:`.fastpath`)
* ``GET /status`` (JSON counters), ``GET /healthz`` (``ok``);
* with ``gateway_config``: ``POST /callback/ws/endpoint`` and ``GET /callback/ws/v2``, Feishu's
  long-connection protocol for the apps listed in that file (:mod:`.longconn`, docs/long-connection.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..exceptions import ConfigurationError
from . import admin
from .auth import AccessPolicy
from .buffer import BufferPolicy
from .config import RelayConfig
from .hub import Hub, InMemoryHub
from .redis_url import is_sentinel
from .routes import STATE_KEY, handle_reply_post, handle_subscribe, handle_webhook, internal_errors
from .stall import watch_stalls
from .state import Closable, RelayState, log
from .tenants import TenantGate
from .ws_policy import CLOSE_SERVICE_RESTART

__all__ = ["STATE_KEY", "create_app", "default_hub", "status_snapshot"]


async def _status(request: web.Request) -> web.Response:
    return web.json_response(status_snapshot(request.app))


def status_snapshot(app: web.Application) -> dict[str, Any]:
    """What ``GET /status`` answers: counters, hub gauges, uptime, and gateway connections if mounted."""
    state = app[STATE_KEY]
    out = state.stats.snapshot(state.hub.counts())
    out.update(state.hub.describe())
    if state.config.buffer:
        out["buffer_stalled"] = state.buffer_stalled
    if state.gateway is not None:
        out["gateway"] = state.gateway.counts()
    return out


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _on_shutdown(app: web.Application) -> None:
    """Drain (docs/deploy.md "Rolling upgrades"). The listener is closed already; new webhooks and
    subscriptions get 503; requests waiting for a bot get up to ``shutdown_timeout`` seconds to be answered
    (their bots are still connected); what still waits is answered as shutdown (503, or 200 for an event
    kept in a Redis buffer); then every WebSocket is closed 1012, which clients take as "reconnect now"."""
    state = app[STATE_KEY]
    state.closing = True
    waiting = len(state.hub.pending)
    left = await state.hub.drain(state.config.shutdown_timeout)
    answered = await state.hub.shutdown()
    conns = list(state.connections.values())
    log.info(
        "relay draining: %d of %d waiting requests answered in time, %d answered as shutdown; "
        "closing %d websockets 1012 (reconnect)",
        waiting - left,
        waiting,
        answered,
        len(conns),
    )

    async def close(ws: Closable) -> None:
        try:
            await asyncio.wait_for(
                ws.close(code=CLOSE_SERVICE_RESTART, message=b"relay restarting: reconnect"), 2.0
            )
        except (asyncio.TimeoutError, ConnectionError):
            pass

    await asyncio.gather(*(close(ws) for ws in conns))
    for task in list(state.tasks):
        task.cancel()


def default_hub(config: RelayConfig) -> Hub:
    """:class:`InMemoryHub`, or a :class:`~.redis_hub.RedisHub` when ``config.redis_url`` is set.

    Raises:
        ConfigurationError: ``redis_url`` is set but the ``redis`` extra is not installed.
    """
    buffers = BufferPolicy.parse(config.buffer, size=config.buffer_size, ttl=config.buffer_ttl)
    if not config.redis_url:
        return InMemoryHub(
            max_subscribers_per_channel=config.max_subscribers_per_channel,
            max_pending_replies=config.max_pending_replies,
            buffers=buffers,
        )
    try:
        from .redis_hub import RedisHub  # imports redis: only with --redis
    except ImportError as exc:
        raise ConfigurationError(
            f"--redis needs the redis extra: pip install 'wslarkbot[redis]' ({exc.name} is missing)"
        ) from None
    longest_wait = max(config.challenge_timeout, config.callback_timeout, config.ack_timeout)
    wait = config.redis_wait_replicas
    return RedisHub(
        config.redis_url,
        max_subscribers_per_channel=config.max_subscribers_per_channel,
        max_pending_replies=config.max_pending_replies,
        pending_ttl=longest_wait + 30.0,
        buffers=buffers,
        wait_replicas=wait if wait >= 0 else int(is_sentinel(config.redis_url)),
    )


async def _start_hub(app: web.Application) -> None:
    state = app[STATE_KEY]
    await state.hub.start()
    if state.config.buffer and state.config.buffer_stall_after:
        task = asyncio.get_running_loop().create_task(watch_stalls(state))
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)


async def _close_hub(app: web.Application) -> None:
    await app[STATE_KEY].hub.close()


def create_app(config: RelayConfig, *, hub: Hub | None = None) -> web.Application:
    """Build the relay application.

    Args:
        config: limits, timeouts and auth.
        hub: the subscription/pending store; default a fresh :class:`InMemoryHub`.

    Raises:
        ConfigurationError: inconsistent auth options or an unreadable htpasswd file.
    """
    if hub is None:
        hub = default_hub(config)
    state = RelayState(
        config=config, hub=hub, access=AccessPolicy(config), tenants=TenantGate(config.tenants)
    )
    # client_max_size only guards request.read()/post(); bodies are read through publish.read_body.
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[internal_errors])
    app[STATE_KEY] = state
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/status", _status)
    admin.install(app)  # /metrics, /dashboard (relay/admin.py)
    app.router.add_get("/sub/{target}", handle_subscribe)
    app.router.add_post("/sub/{target}", handle_reply_post)
    app.router.add_post("/{org}/{app_id}", handle_webhook)
    app.on_startup.append(_start_hub)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_close_hub)
    if config.gateway_config:
        # Imported only when configured: the gateway is an optional feature (docs/long-connection.md).
        from .longconn import Gateway, load_gateway_config

        gateway = Gateway(
            load_gateway_config(config.gateway_config), redis_url=config.redis_url, node_id=hub.node_id
        )
        gateway.install(app)
        gateway.observer = state.observer  # its webhooks in the same metrics and dashboard
        state.gateway = gateway
    return app
