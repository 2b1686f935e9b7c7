"""Access tokens of one app, with no I/O (protocol.md §8; docs/openapi.md "Tokens").

Feishu hands out tokens that live ``expire`` seconds (at most 7200). Asking again while more than 30 min
remain returns the *same* token; with less than 30 min left it returns a new one and both stay valid.
We refresh once less than :data:`REFRESH_MARGIN` remains (10 min, as the official SDK does), which is
always inside Feishu's 30-min window, so a refresh really yields a fresh token.

Two kinds of app:

* **self-built** (``app_type="self_built"``, the default): ``tenant_access_token`` and ``app_access_token``
  straight from the app id and secret (``.../internal`` endpoints);
* **store** (``app_type="store"``, an app from the app marketplace, installed by many tenants): Feishu
  pushes an ``app_ticket`` event every hour (and on request, :data:`TICKET_RESEND_PATH`); the
  ``app_access_token`` is made from id, secret and ticket, and each tenant's ``tenant_access_token`` from
  the ``app_access_token`` and that tenant's ``tenant_key``: one cache per tenant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from ..exceptions import ConfigurationError, FeishuAPIError

__all__ = [
    "APP_TOKEN_PATH",
    "REFRESH_MARGIN",
    "STORE_APP_TOKEN_PATH",
    "STORE_TENANT_TOKEN_PATH",
    "TICKET_RESEND_PATH",
    "TOKEN_PATH",
    "AppType",
    "NoAppTicket",
    "TokenCache",
]

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
APP_TOKEN_PATH = "/open-apis/auth/v3/app_access_token/internal"
STORE_APP_TOKEN_PATH = "/open-apis/auth/v3/app_access_token"
STORE_TENANT_TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token"
TICKET_RESEND_PATH = "/open-apis/auth/v3/app_ticket/resend"
#: Seconds before expiry at which a cached token is considered stale.
REFRESH_MARGIN = 600.0
#: Most tenants whose tokens a store app keeps at once (the least recently used one is dropped).
MAX_TENANTS = 10_000

AppType = Literal["self_built", "store"]


class NoAppTicket(ConfigurationError):
    """A store app needs an ``app_ticket`` and none has arrived yet (Feishu sends one every hour; the client
    asks for one at start)."""


class TokenCache:
    """One token (``field`` of the answer) and when it must be fetched again. Not thread-safe by itself:
    the clients serialise the token flows with their own lock."""

    def __init__(
        self, field: str, *, clock: Callable[[], float], refresh_margin: float = REFRESH_MARGIN
    ) -> None:
        self.field = field
        self._clock = clock
        self._margin = refresh_margin
        self._token: str | None = None
        self._refresh_at = 0.0

    def __repr__(self) -> str:  # never show the token
        return f"TokenCache({self.field}, cached={self._token is not None})"

    def current(self, *, stale: str | None = None) -> str | None:
        """The cached token if still fresh and not the ``stale`` one the server just rejected."""
        if self._token is None or self._clock() >= self._refresh_at:
            return None
        if stale is not None and self._token == stale:
            self._token = None
            return None
        return self._token

    def accept(self, body: dict[str, Any]) -> str:
        """Store the token from a successful token answer and return it."""
        token = body.get(self.field)
        expire = body.get("expire")
        if not isinstance(token, str) or not token or not isinstance(expire, (int, float)):
            raise FeishuAPIError(-1, f"token response lacks {self.field}/expire", body=None)
        # A token with less than the margin left is still used, for half its remaining life.
        margin = min(self._margin, expire / 2)
        self._token = token
        self._refresh_at = self._clock() + expire - margin
        return token
