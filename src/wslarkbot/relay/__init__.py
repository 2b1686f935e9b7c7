"""The relay server (``wslarkbot serve``): Feishu webhooks in, WebSocket frames out, bot answers back.

Public API::

    from wslarkbot.relay import RelayConfig, run_relay, RelayThread, create_app

``RelayConfig`` needs nothing beyond the standard library; the rest needs the ``relay`` extra (aiohttp,
bcrypt) and is imported lazily, so ``import wslarkbot.relay`` works without it. ``RedisHub`` (several nodes
sharing Redis, ``--redis``, docs/deploy.md) also needs the ``redis`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import RelayConfig

if TYPE_CHECKING:
    from .app import create_app
    from .hub import Hub, InMemoryHub, Subscriber
    from .redis_hub import RedisHub
    from .runner import RelayThread, RunningRelay, run_relay

__all__ = [
    "Hub",
    "InMemoryHub",
    "RedisHub",
    "RelayConfig",
    "RelayThread",
    "RunningRelay",
    "Subscriber",
    "create_app",
    "run_relay",
]

_LAZY = {
    "create_app": ".app",
    "Hub": ".hub",
    "InMemoryHub": ".hub",
    "Subscriber": ".hub",
    "RedisHub": ".redis_hub",
    "RelayThread": ".runner",
    "RunningRelay": ".runner",
    "run_relay": ".runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
