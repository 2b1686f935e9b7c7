"""The relay's shared state, one per relay (the aiohttp application holds it, :mod:`.routes`). No aiohttp."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .answer import INTERNAL_ERROR, Answer, error_answer
from .auth import AccessPolicy
from .config import RelayConfig
from .hub import Hub, Subscriber
from .limits import BackendUnavailable, LimitExceeded
from .observe import NULL_OBSERVER, RelayObserver
from .status import RelayStats
from .tenants import TenantGate

__all__ = ["Closable", "GatewayPort", "RelayState", "internal_error", "log", "refusal"]

log = logging.getLogger("wslarkbot.relay")

if TYPE_CHECKING:
    import asyncio


class Closable(Protocol):
    """A subscriber's connection as shutdown sees it (aiohttp's WebSocketResponse or the fast path's)."""

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class GatewayPort(Protocol):
    """The long-connection gateway (:mod:`.longconn`, ``--gateway-config``) as the relay core sees it."""

    #: where it reports answered webhooks (admin.install() points it at the relay's observer)
    observer: RelayObserver

    def serves(self, app_id: str) -> bool:
        """Whether ``app_id``'s webhooks go to the gateway rather than to subscribers."""
        ...

    def counts(self) -> dict[str, int]:
        """Connected long-connection clients per app."""
        ...

    async def webhook_answer(self, app_id: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Verify, deliver and answer one webhook of a gateway app (body already read and size-limited)."""
        ...

    def reload_config(self, path: str) -> None:
        """Re-read the gateway config file (SIGHUP; raises ConfigurationError and keeps the old one)."""
        ...


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
    #: the long-connection gateway, if one is mounted (create_app with ``gateway_config``)
    gateway: GatewayPort | None = None
    #: per-tenant limits (relay/tenants.py); none by default
    tenants: TenantGate = field(default_factory=lambda: TenantGate({}))


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
