"""The relay's shared state, stored on the aiohttp application."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from .answer import INTERNAL_ERROR, Answer, error_answer
from .auth import AccessPolicy
from .config import RelayConfig
from .hub import Hub, Subscriber
from .limits import BackendUnavailable, LimitExceeded
from .observe import NULL_OBSERVER, RelayObserver
from .status import RelayStats

__all__ = ["STATE_KEY", "SWITCHED_KEY", "Closable", "RelayState", "internal_error", "log", "refusal"]

log = logging.getLogger("wslarkbot.relay")

if TYPE_CHECKING:
    import asyncio


class Closable(Protocol):
    """A subscriber's connection as shutdown sees it (aiohttp's WebSocketResponse or the fast path's)."""

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


@dataclass
class RelayState:
    config: RelayConfig
    hub: Hub
    access: AccessPolicy
    stats: RelayStats = field(default_factory=RelayStats)
    #: open WebSockets of this process, to close them with 1001 on shutdown.
    connections: dict[Subscriber, Closable] = field(default_factory=dict)
    #: tasks the relay owns beyond request handlers (kicking slow subscribers).
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    closing: bool = False
    #: buffered events found stalled by the last check (relay/stall.py)
    buffer_stalled: int = 0
    #: metrics and dashboard (relay/observe.py); admin.install() sets it, the default does nothing.
    observer: RelayObserver = NULL_OBSERVER


STATE_KEY: web.AppKey[RelayState] = web.AppKey("wslarkbot_relay_state", RelayState)
#: Set on a request once it became a WebSocket: an error after that cannot be answered with HTTP.
SWITCHED_KEY: web.RequestKey[bool] = web.RequestKey("wslarkbot_switched", bool)


def internal_error(method: str, path: str) -> Answer:
    """Log a request whose handling raised (with its traceback; call it from the ``except`` block) and
    return the answer both servers give it."""
    log.exception("%s %s failed", method, path[:100])
    return INTERNAL_ERROR


def refusal(
    state: RelayState, exc: LimitExceeded, line: str, *args: object, headers: dict[str, str] | None = None
) -> Answer:
    """Count a refused request, log ``line % args`` (one line an operator can act on), answer ``exc``.

    An unreachable backend is logged at DEBUG: the hub logs it once per state change, not once per
    request. A 503 carries ``Retry-After`` (the configured one), a refusal that names its own (429) that.
    """
    state.stats.rejected += 1
    log.log(logging.DEBUG if isinstance(exc, BackendUnavailable) else logging.WARNING, line, *args)
    if exc.retry_after is not None:
        headers = {**(headers or {}), "Retry-After": str(exc.retry_after)}
    elif exc.status == 503:
        headers = {**(headers or {}), "Retry-After": str(state.config.retry_after)}
    return error_answer(exc.status, exc.reason, headers or None)
