"""What the relay tells observers (metrics, the dashboard): metadata-only events, never bodies or secrets.

The relay calls one :class:`RelayObserver` held on its state (``state.observer``); the default does
nothing. :class:`Observers` fans one event out to several observers. Calls happen on the relay's event
loop, synchronously, on the hot path: an observer must not block, await or allocate much (a counter
increment, a small tuple appended to a bounded deque).

Events:

* :meth:`RelayObserver.webhook_answered` — once per webhook that got past validation (it was published, or
  the relay tried to), when its HTTP answer is decided: channel, request id, request kind, how many
  subscribers received it, the HTTP status, the outcome name and the latency (received -> answered).
  "Received" is counted here too, so a request still waiting shows up in the ``pending_replies`` gauge,
  not in the counters.
* :meth:`RelayObserver.subscriber_connected` / :meth:`RelayObserver.subscriber_disconnected` — a WebSocket
  subscription opened / closed (with its close code).
* :meth:`RelayObserver.subscriber_answered` — a subscriber's ``ack`` or ``reply`` was accepted.

Outcomes (:class:`~.outcomes.WebhookOutcome`): one list for the relay's webhooks and those of long-connection
gateway apps (:mod:`.longconn`, whose request id is Feishu's ``X-Request-Id`` or ``-``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hub import Subscriber
    from .outcomes import WebhookOutcome

__all__ = ["NULL_OBSERVER", "Observers", "RelayObserver", "channel_kind"]


def channel_kind(channel: str) -> str:
    """``"org"`` for an ``org_*`` channel, ``"hook"`` for an app channel (the webhook route it came from)."""
    return "org" if channel.startswith("org_") else "hook"  # is_org_channel(), inlined: once per webhook


class RelayObserver:
    """Receives the relay's events. Every method is a no-op here; subclasses override what they need."""

    def webhook_answered(
        self,
        channel: str,
        request_id: str,
        kind: str,
        delivered: int,
        status: int,
        outcome: WebhookOutcome,
        latency: float,
    ) -> None:
        """A webhook was answered.

        Args:
            channel: the channel it was published to (app id or ``org_<name>``).
            request_id: the ``x-request-id`` the subscribers saw.
            kind: ``challenge``, ``callback`` or ``event`` (:class:`~.policy.WaitKind` value).
            delivered: subscribers that received the envelope.
            status: the HTTP status Feishu got.
            outcome: how it was answered (:mod:`.outcomes`).
            latency: seconds from receiving the request to answering it.
        """

    def subscriber_connected(self, sub: Subscriber) -> None:
        """A WebSocket subscription is open and registered in the hub."""

    def subscriber_disconnected(self, sub: Subscriber, close_code: int | None) -> None:
        """A WebSocket subscription closed (``close_code`` as aiohttp reports it, None if unknown)."""

    def subscriber_answered(self, sub: Subscriber, request_id: str, kind: str) -> None:
        """``sub`` answered ``request_id`` with ``kind`` (``ack``, ``nack`` or ``reply``); it was accepted."""


NULL_OBSERVER = RelayObserver()


class Observers(RelayObserver):
    """Forwards every event to each of ``observers``, in order."""

    def __init__(self, observers: Iterable[RelayObserver]) -> None:
        self.observers = tuple(observers)

    def webhook_answered(
        self,
        channel: str,
        request_id: str,
        kind: str,
        delivered: int,
        status: int,
        outcome: WebhookOutcome,
        latency: float,
    ) -> None:
        for obs in self.observers:
            obs.webhook_answered(channel, request_id, kind, delivered, status, outcome, latency)

    def subscriber_connected(self, sub: Subscriber) -> None:
        for obs in self.observers:
            obs.subscriber_connected(sub)

    def subscriber_disconnected(self, sub: Subscriber, close_code: int | None) -> None:
        for obs in self.observers:
            obs.subscriber_disconnected(sub, close_code)

    def subscriber_answered(self, sub: Subscriber, request_id: str, kind: str) -> None:
        for obs in self.observers:
            obs.subscriber_answered(sub, request_id, kind)
