"""How a webhook was answered: the one list of outcomes the relay and the gateway report. No I/O.

Every answered webhook has exactly one :class:`WebhookOutcome`; its value is the ``outcome=`` of the log
line, the ``outcome`` label of ``wslarkbot_webhooks_answered_total`` (docs/operations.md) and the
dashboard's column. Consumers ask the member (:attr:`~WebhookOutcome.acked`,
:attr:`~WebhookOutcome.reached_bot`), never the spelling of its name.
"""

from __future__ import annotations

import enum

from .limits import BackendUnavailable, LimitExceeded

__all__ = ["WebhookOutcome", "answered_by", "refused_by"]


class WebhookOutcome(str, enum.Enum):
    """One webhook's outcome. Values are stable: dashboards and alerts select on them."""

    # The bot answered (how, and the way its answer came: WebSocket, HTTP, the long connection).
    ACK_WS = "ack-ws"
    REPLY_WS = "reply-ws"
    NACK_WS = "nack-ws"
    REPLY_HTTP = "reply-http"
    ACK_GATEWAY = "ack-gateway"
    REPLY_GATEWAY = "reply-gateway"
    #: the long-connection client's handler failed (500), or answered callback data that is not JSON (502)
    ERROR_GATEWAY = "error-gateway"
    #: the gateway answered the URL-verification challenge itself
    CHALLENGE_GATEWAY = "challenge-gateway"
    #: handed to original-protocol subscribers only, answered 200 at once (they never ack)
    DELIVERED = "delivered"
    #: kept in a buffer (``--buffer``), answered 200: nobody received it yet
    BUFFERED = "buffered"
    #: buffered, received, but not acked within the deadline: kept, answered 200
    BUFFERED_TIMEOUT = "buffered-timeout"
    #: buffered in Redis while this node shut down: another node delivers it
    BUFFERED_SHUTDOWN = "buffered-shutdown"
    #: a gateway app with ``replay = true`` stored it for its clients
    BUFFERED_GATEWAY = "buffered-gateway"
    NO_SUBSCRIBER = "no-subscriber"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"
    #: the buffer is full of unacked events (503)
    BUFFER_FULL = "buffer-full"
    #: Redis unreachable (503)
    BACKEND_UNAVAILABLE = "backend-unavailable"
    #: another limit refused it after publishing started
    REFUSED = "refused"
    #: a gateway webhook that failed verification (401, the same answer whatever failed)
    REJECTED = "rejected"
    #: the relay failed (500, logged with a traceback)
    ERROR = "error"

    def __str__(self) -> str:  # the value in log lines and labels on every Python version
        return self.value

    @property
    def acked(self) -> bool:
        """Whether the bot acked the event (the dashboard's and metrics' "acked" count)."""
        return self in _ACKED

    @property
    def reached_bot(self) -> bool:
        """Whether the webhook reached a bot (or its buffer did not keep it from one)."""
        return self not in _UNREACHED


_ACKED = frozenset({WebhookOutcome.ACK_WS, WebhookOutcome.ACK_GATEWAY})
_UNREACHED = frozenset(
    {
        WebhookOutcome.REJECTED,
        WebhookOutcome.CHALLENGE_GATEWAY,
        WebhookOutcome.NO_SUBSCRIBER,
        WebhookOutcome.BUFFERED_GATEWAY,
        WebhookOutcome.BUFFER_FULL,
        WebhookOutcome.BACKEND_UNAVAILABLE,
    }
)
_BY_ANSWER = {
    ("ack", "ws"): WebhookOutcome.ACK_WS,
    ("reply", "ws"): WebhookOutcome.REPLY_WS,
    ("nack", "ws"): WebhookOutcome.NACK_WS,
    ("reply", "http"): WebhookOutcome.REPLY_HTTP,
}


def answered_by(kind: str, via: str) -> WebhookOutcome:
    """The outcome of a webhook a bot answered: ``kind`` ack/reply/nack, ``via`` ws/http
    (:class:`~.pending.Outcome`)."""
    return _BY_ANSWER.get((kind, via), WebhookOutcome.ERROR)


def refused_by(exc: LimitExceeded) -> WebhookOutcome:
    """The outcome of a webhook a limit refused after publishing started."""
    if isinstance(exc, BackendUnavailable):
        return WebhookOutcome.BACKEND_UNAVAILABLE
    return WebhookOutcome.BUFFER_FULL if exc.limit == "buffer_size" else WebhookOutcome.REFUSED
