"""The bot-side WebSocket client: connects bots to a wslarkbot relay (or an original nginx+nchan relay).

* :class:`Client` -- blocking, the original API: ``Client(bot, server="relay.example.com").start()``.
* :class:`AsyncClient` -- the asyncio core: ``await client.run()``, ``async with AsyncClient(...)``.
* :func:`backoff` -- the default reconnect policy (full-jitter exponential backoff).
* :data:`WS_LARK_PROXY_SERVER`, :data:`WS_LARK_PROXY_PROTOCOL` -- defaults from the environment
  (``WSLARKBOT_SERVER``, ``WSLARKBOT_PROTOCOL``); see :mod:`wslarkbot.client.config`.
"""

from __future__ import annotations

from .aio import AsyncClient, ReconnectGaveUp, RelayAuthError
from .backoff import ReconnectPolicy, backoff
from .config import WS_LARK_PROXY_PROTOCOL, WS_LARK_PROXY_SERVER, Endpoint, resolve_endpoint
from .dispatch import BotLike, Dispatcher, ReplySink
from .status import ClientStatus
from .sync import Client

__all__ = [
    "WS_LARK_PROXY_PROTOCOL",
    "WS_LARK_PROXY_SERVER",
    "AsyncClient",
    "BotLike",
    "Client",
    "ClientStatus",
    "Dispatcher",
    "Endpoint",
    "ReconnectGaveUp",
    "ReconnectPolicy",
    "RelayAuthError",
    "ReplySink",
    "backoff",
    "resolve_endpoint",
]
