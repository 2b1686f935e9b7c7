"""Relay limits: the error raised when one is exceeded, and the checks that need no I/O."""

from __future__ import annotations

from ..exceptions import WslarkbotError
from ..wire import CHANNEL_RE

__all__ = ["BackendUnavailable", "LimitExceeded", "parse_channel_list"]


class LimitExceeded(WslarkbotError):
    """A request broke a relay limit or rule; the relay answers ``status`` with ``reason``.

    Attributes:
        status: the HTTP status to answer (400, 401, 403, 404, 413, 429, 503, ...).
        limit: a short machine name of the rule (``max_body_bytes``, ``channel_syntax``, ...), for logs.
        reason: the text sent back to the caller; never contains secrets or bodies.
    """

    def __init__(self, status: int, limit: str, reason: str, *, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.limit = limit
        self.reason = reason
        #: seconds for a ``Retry-After`` header (429); a 503 gets the relay's configured value
        self.retry_after = retry_after


class BackendUnavailable(LimitExceeded):
    """The shared hub's backend (Redis) cannot be reached: 503 with ``Retry-After``, so Feishu retries.

    Logged once per state change by the hub, not once per request.
    """

    def __init__(self, reason: str = "relay backend (redis) unavailable") -> None:
        super().__init__(503, "backend", reason)


def _too_many(count: int, max_channels: int) -> LimitExceeded:
    return LimitExceeded(
        400,
        "max_channels_per_subscription",
        f"too many channels in one subscription: {count} (limit {max_channels})",
    )


def parse_channel_list(spec: str, *, max_channels: int) -> tuple[str, ...]:
    """Parse ``ch1,ch2,...`` (nchan's ``nchan_channel_id_split_delimiter ","``).

    Duplicates are dropped, order kept.

    Raises:
        LimitExceeded: 400 for an empty or invalid name, or more than ``max_channels`` channels.
    """
    # Capped before any per-name work, and de-duplicated in linear time: a 16,000-name list from an
    # unauthenticated client must cost nothing (the dict keeps the first occurrence's order).
    if spec.count(",") >= max_channels * 4:
        raise _too_many(spec.count(",") + 1, max_channels)
    out: dict[str, None] = {}
    for name in spec.split(","):
        if not CHANNEL_RE.match(name):
            shown = name[:70] + ("..." if len(name) > 70 else "")
            raise LimitExceeded(
                400,
                "channel_syntax",
                f"invalid channel name {shown!r}: use letters, digits, '_', '.', '-' (1-64 chars)",
            )
        out[name] = None
    if len(out) > max_channels:
        raise _too_many(len(out), max_channels)
    return tuple(out)
