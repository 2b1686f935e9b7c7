"""The tenant_access_token cache for one custom app, with no I/O (protocol.md §8).

Feishu hands out tokens that live ``expire`` seconds (at most 7200). Asking again while more than 30 min
remain returns the *same* token; with less than 30 min left it returns a new one and both stay valid.
We refresh once less than :data:`REFRESH_MARGIN` remains (10 min, as the official SDK does), which is
always inside Feishu's 30-min window, so a refresh really yields a fresh token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..exceptions import FeishuAPIError

__all__ = ["REFRESH_MARGIN", "TOKEN_PATH", "TokenCache"]

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
#: Seconds before expiry at which a cached token is considered stale.
REFRESH_MARGIN = 600.0


class TokenCache:
    """Holds the current token and decides when it must be fetched again. Not thread-safe by itself:
    the clients serialise :meth:`OpenAPICore.token_flow` with their own lock."""

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        *,
        clock: Callable[[], float],
        refresh_margin: float = REFRESH_MARGIN,
    ) -> None:
        self._app_id = app_id
        self._app_secret = app_secret
        self._clock = clock
        self._margin = refresh_margin
        self._token: str | None = None
        self._refresh_at = 0.0

    def __repr__(self) -> str:  # never show the secret or the token
        return f"TokenCache(app_id={self._app_id!r}, cached={self._token is not None})"

    def current(self, *, stale: str | None = None) -> str | None:
        """The cached token if still fresh and not the ``stale`` one the server just rejected."""
        if self._token is None or self._clock() >= self._refresh_at:
            return None
        if stale is not None and self._token == stale:
            self._token = None
            return None
        return self._token

    def request_body(self) -> dict[str, str]:
        """The JSON body to POST to :data:`TOKEN_PATH`."""
        return {"app_id": self._app_id, "app_secret": self._app_secret}

    def accept(self, body: dict[str, Any]) -> str:
        """Store the token from a successful token response body and return it."""
        token = body.get("tenant_access_token")
        expire = body.get("expire")
        if not isinstance(token, str) or not token or not isinstance(expire, (int, float)):
            raise FeishuAPIError(-1, "token response lacks tenant_access_token/expire", body=None)
        # A token with less than the margin left is still used, for half its remaining life.
        margin = min(self._margin, expire / 2)
        self._token = token
        self._refresh_at = self._clock() + expire - margin
        return token
