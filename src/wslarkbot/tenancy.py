"""Which tenant the code running now acts for: a store app's handler calls the OpenAPI as the tenant of the
event it handles (docs/openapi.md "Store apps").

The dispatch drivers (:mod:`wslarkbot._dispatch`) run each handler inside :func:`acting_for` with the
event's ``tenant_key``; ``bot.api`` of a store app then answers the client of that tenant
(``api.for_tenant(key)``). The value is a :class:`contextvars.ContextVar`, so it follows the handler into
``await`` and into the executor thread that runs a ``def`` handler, and never leaks into another one.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["acting_for", "current_tenant"]

_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("wslarkbot_tenant", default=None)


def current_tenant() -> str | None:
    """The ``tenant_key`` of the event being handled here, or None outside a handler."""
    return _tenant.get()


@contextlib.contextmanager
def acting_for(tenant_key: str | None) -> Iterator[None]:
    """Run the block as ``tenant_key`` (None: leave the current tenant as it is)."""
    if tenant_key is None:
        yield
        return
    token = _tenant.set(tenant_key)
    try:
        yield
    finally:
        _tenant.reset(token)
