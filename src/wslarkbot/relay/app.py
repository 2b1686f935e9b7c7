"""``create_app(config)``: the relay's aiohttp application (routes, state, graceful shutdown).

Routes (docs/protocol.md):

* ``POST /hook/<app_id>``, ``POST /org_<name>/<app_id>``: Feishu's webhooks (:mod:`.publish`);
* ``GET /sub/<ch1,ch2,...>``: WebSocket subscriptions (:mod:`.subscribe`);
* ``POST /sub/<request_id>``: replies of original clients (:mod:`.publish`);
* ``GET /status`` (JSON counters), ``GET /healthz`` (``ok``).
"""

from __future__ import annotations

import asyncio

from aiohttp import WSCloseCode, web

from .auth import AccessPolicy
from .config import RelayConfig
from .hub import Hub, InMemoryHub
from .publish import handle_reply_post, handle_webhook
from .state import STATE_KEY, RelayState, log
from .subscribe import handle_subscribe

__all__ = ["STATE_KEY", "create_app"]


async def _status(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.json_response(state.stats.snapshot(state.hub.counts()))


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _on_shutdown(app: web.Application) -> None:
    """Answer waiting requests 503 and close every WebSocket with 1001 (going away) so clients reconnect."""
    state = app[STATE_KEY]
    state.closing = True
    answered = await state.hub.shutdown()
    conns = list(state.connections.values())
    log.info(
        "relay shutting down: %d waiting requests answered 503, closing %d websockets", answered, len(conns)
    )

    async def close(ws: web.WebSocketResponse) -> None:
        try:
            await asyncio.wait_for(ws.close(code=WSCloseCode.GOING_AWAY, message=b"relay shutting down"), 2.0)
        except (asyncio.TimeoutError, ConnectionError):
            pass

    await asyncio.gather(*(close(ws) for ws in conns))
    for task in list(state.tasks):
        task.cancel()


def create_app(config: RelayConfig, *, hub: Hub | None = None) -> web.Application:
    """Build the relay application.

    Args:
        config: limits, timeouts and auth.
        hub: the subscription/pending store; default a fresh :class:`InMemoryHub`.

    Raises:
        ConfigurationError: inconsistent auth options or an unreadable htpasswd file.
    """
    if hub is None:
        hub = InMemoryHub(
            max_subscribers_per_channel=config.max_subscribers_per_channel,
            max_pending_replies=config.max_pending_replies,
        )
    state = RelayState(config=config, hub=hub, access=AccessPolicy(config))
    # client_max_size only guards request.read()/post(); bodies are read through publish.read_body.
    app = web.Application(client_max_size=config.max_body_bytes)
    app[STATE_KEY] = state
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/status", _status)
    app.router.add_get("/sub/{target}", handle_subscribe)
    app.router.add_post("/sub/{target}", handle_reply_post)
    app.router.add_post("/{org}/{app_id}", handle_webhook)
    app.on_shutdown.append(_on_shutdown)
    return app
