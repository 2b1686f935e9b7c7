"""The operator dashboard's data: live subscribers, channels, event rates and recent deliveries.

:class:`DashboardObserver` keeps, in bounded memory, what ``GET /dashboard/api`` shows (routes and auth
live in :mod:`.admin`; the page itself is ``static/dashboard.html``, which polls the API every second):

* subscribers of this process: peer address, channels, protocol, connected since, last ack/reply;
* channels: those with subscribers, plus the last :data:`MAX_CHANNELS` that received webhooks;
* rates: webhooks received and failed per second over the last :data:`RATE_WINDOW` seconds;
* the last :data:`RECENT` deliveries as metadata only: time, channel, request id, kind, status, outcome,
  latency. Never bodies, headers or credentials.

Per webhook the observer appends one small tuple to a bounded deque and bumps a few integers.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .observe import RelayObserver, channel_kind
from .outcomes import WebhookOutcome

if TYPE_CHECKING:
    from .hub import Hub, Subscriber

__all__ = ["MAX_CHANNELS", "MAX_LISTED", "RATE_WINDOW", "RECENT", "DashboardObserver"]

#: Recent deliveries kept for the dashboard.
RECENT = 100
#: Channels remembered without subscribers (the oldest is forgotten first): bounds memory per caller.
MAX_CHANNELS = 1000
#: Seconds the event rates are averaged over.
RATE_WINDOW = 10
#: Most subscribers and channels listed in one API answer (the oldest subscribers, the busiest channels
#: first); the gauges still count all of them.
MAX_LISTED = 500


#: one recent delivery: time, channel, request id, kind, status, outcome, latency, delivered
_Recent = tuple[float, str, str, str, int, WebhookOutcome, float, int]


class _Rates:
    """Events per second over a sliding window: one bucket per second in a fixed ring (no allocation)."""

    def __init__(self, clock: Callable[[], float], size: int = 60) -> None:
        self.clock = clock
        self.size = size
        self._secs = [-1] * size
        self._received = [0] * size
        self._failed = [0] * size

    def add(self, failed: bool) -> None:
        sec = int(self.clock())
        i = sec % self.size
        if self._secs[i] != sec:
            self._secs[i] = sec
            self._received[i] = 0
            self._failed[i] = 0
        self._received[i] += 1
        if failed:
            self._failed[i] += 1

    def per_second(self, window: int) -> tuple[float, float]:
        """(received, failed) per second over the last ``window`` seconds, the current one included."""
        now = int(self.clock())
        received = failed = 0
        for i, sec in enumerate(self._secs):
            if now - window < sec <= now:
                received += self._received[i]
                failed += self._failed[i]
        return received / window, failed / window


class _SubInfo:
    __slots__ = ("answers", "connected_at", "last_answer", "sub")

    def __init__(self, sub: Subscriber, connected_at: float) -> None:
        self.sub = sub
        self.connected_at = connected_at
        self.last_answer: float | None = None
        self.answers = 0


class DashboardObserver(RelayObserver):
    """Bounded in-memory view of the relay for the dashboard.

    Args:
        clock: wall-clock seconds (``time.time``), shown to people as local times.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started = clock()
        self.recent: collections.deque[_Recent] = collections.deque(maxlen=RECENT)
        self.totals = {"received": 0, "delivered": 0, "acked": 0, "failed": 0}
        #: channel -> [received, failed, last event time, last status]
        self.channels: dict[str, list[Any]] = {}
        self.subscribers: dict[int, _SubInfo] = {}
        self.rates = _Rates(clock)

    # --- events (hot path) ---------------------------------------------------------------------------

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
        now = self.clock()
        failed = not 200 <= status < 300
        self.recent.append((now, channel, request_id, kind, status, outcome, latency, delivered))
        totals = self.totals
        totals["received"] += 1
        if delivered:
            totals["delivered"] += 1
        if outcome.acked:
            totals["acked"] += 1
        if failed:
            totals["failed"] += 1
        self.rates.add(failed)
        stats = self.channels.pop(channel, None)  # re-inserted last: the dict is ordered by activity
        if stats is None:
            stats = [0, 0, 0.0, 0]
            if len(self.channels) >= MAX_CHANNELS:
                del self.channels[next(iter(self.channels))]
        stats[0] += 1
        stats[1] += failed
        stats[2] = now
        stats[3] = status
        self.channels[channel] = stats

    def subscriber_connected(self, sub: Subscriber) -> None:
        self.subscribers[sub.id] = _SubInfo(sub, self.clock())

    def subscriber_disconnected(self, sub: Subscriber, close_code: int | None) -> None:
        self.subscribers.pop(sub.id, None)

    def subscriber_answered(self, sub: Subscriber, request_id: str, kind: str) -> None:
        info = self.subscribers.get(sub.id)
        if info is not None:
            info.last_answer = self.clock()
            info.answers += 1

    # --- the API's view ------------------------------------------------------------------------------

    def snapshot(self, hub: Hub, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """What ``GET /dashboard/api`` answers (JSON-ready; times are Unix seconds)."""
        now = self.clock()
        received_rate, failed_rate = self.rates.per_second(RATE_WINDOW)
        subscribers: list[dict[str, Any]] = []
        members: collections.Counter[str] = collections.Counter()
        total_buffered = 0
        for info in sorted(self.subscribers.values(), key=lambda i: i.connected_at):
            sub = info.sub
            members.update(sub.channels)
            total_buffered += sub.buffered_bytes
            if len(subscribers) >= MAX_LISTED:
                continue
            subscribers.append(
                {
                    "id": sub.id,
                    "peer": sub.peer,
                    "channels": list(sub.channels),
                    "protocol": sub.protocol,
                    "connected_since": info.connected_at,
                    "last_ack": info.last_answer,
                    "answers": info.answers,
                    "buffered_bytes": sub.buffered_bytes,
                }
            )
        names = [c for c, _ in members.most_common(MAX_LISTED)]
        names += [c for c in reversed(self.channels) if c not in members][: MAX_LISTED - len(names)]
        channels = []
        for name in names:
            received, failed, last, status = self.channels.get(name) or (0, 0, None, None)
            channels.append(
                {
                    "name": name,
                    "kind": channel_kind(name),
                    "subscribers": members.get(name, 0),
                    "received": received,
                    "failed": failed,
                    "last_event": last,
                    "last_status": status,
                }
            )
        recent = [
            {
                "time": t,
                "channel": channel,
                "request_id": request_id,
                "kind": kind,
                "status": status,
                "outcome": outcome.value,
                "latency_ms": round(latency * 1000, 1),
                "delivered": delivered,
            }
            for (t, channel, request_id, kind, status, outcome, latency, delivered) in reversed(self.recent)
        ]
        out: dict[str, Any] = {
            "now": now,
            "uptime": round(now - self.started, 3),
            "totals": dict(self.totals),
            "rates": {"window": RATE_WINDOW, "received": received_rate, "failed": failed_rate},
            "gauges": {**hub.counts(), "buffered_bytes": total_buffered},
            "channels": channels,
            "subscribers": subscribers,
            "recent": recent,
        }
        if extra:
            out.update(extra)
        return out
