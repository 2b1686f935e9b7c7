"""Prometheus metrics of one relay app, served as ``GET /metrics`` (text format; OpenMetrics on request).

Each relay app has its own :class:`prometheus_client.CollectorRegistry` (never the process-global one), so
several relays in one process (tests, embedding) do not mix their numbers.

Counters are updated by :class:`MetricsObserver` on the hot path (one cached child per label set: a dict
lookup and an increment). Gauges are read from the hub and the relay state when Prometheus scrapes.

Metrics (``channel_kind`` is ``hook`` for ``/hook/<app_id>`` and ``org`` for ``/org_<name>/<app_id>``;
channel names are never labels, so a caller cannot grow the series count):

========================================================  =========================================
``wslarkbot_webhooks_received_total{channel_kind,kind}``   webhooks published (``kind``: event,
                                                           challenge, callback)
``wslarkbot_webhooks_delivered_total{channel_kind}``       webhooks at least one subscriber received
``wslarkbot_frames_delivered_total{channel_kind}``         envelope frames sent (one per subscriber)
``wslarkbot_webhooks_acked_total{channel_kind}``           events a protocol-2 bot acked
``wslarkbot_webhooks_answered_total{channel_kind,outcome,status}``  every answer, by outcome and status
``wslarkbot_webhooks_failed_total{channel_kind,outcome}``  answers that were not 2xx (503, 504, 500)
``wslarkbot_webhook_reply_latency_seconds{channel_kind}``  histogram: received -> answered
``wslarkbot_subscriber_connects_total``                    WebSocket subscriptions opened
``wslarkbot_subscriber_disconnects_total``                 WebSocket subscriptions closed
``wslarkbot_subscriber_answers_total{kind}``               accepted ``ack``/``reply`` frames
``wslarkbot_rejected_total``                               refused requests/messages (``/status``)
``wslarkbot_subscribers``, ``wslarkbot_channels``          gauges from the hub
``wslarkbot_pending_replies``                              webhooks waiting for a bot right now
``wslarkbot_subscriber_buffer_bytes{stat="sum"|"max"}``    bytes queued for this process's subscribers
``wslarkbot_redis_connected``                              1/0, only with the Redis hub
``wslarkbot_gateway_connections{app_id}``                  long-connection clients (gateway mounted)
``wslarkbot_build_info{version}``                          always 1
========================================================  =========================================

Redis: the collector reads ``hub.describe()["redis"]["connected"]`` (what ``/status`` shows); the gauge is
absent for the in-memory hub.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .. import __version__
from .longconn.server import GATEWAY_KEY
from .observe import RelayObserver, channel_kind
from .state import STATE_KEY

if TYPE_CHECKING:
    from aiohttp import web

    from .hub import Subscriber

__all__ = ["LATENCY_BUCKETS", "MetricsObserver", "RelayCollector", "render"]

#: Seconds. Feishu's deadlines are 1 s (challenge) and 3 s (everything else); the relay waits 0.9/2.8 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.9, 1.0, 2.0, 2.8, 3.0, 5.0)

_KINDS = ("hook", "org")


class MetricsObserver(RelayObserver):
    """Counts the relay's events into ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.received = Counter(
            "wslarkbot_webhooks_received", "Webhooks published", ["channel_kind", "kind"], registry=r
        )
        self.delivered = Counter(
            "wslarkbot_webhooks_delivered",
            "Webhooks received by at least one subscriber",
            ["channel_kind"],
            registry=r,
        )
        self.frames = Counter(
            "wslarkbot_frames_delivered",
            "Envelope frames sent (one per subscriber)",
            ["channel_kind"],
            registry=r,
        )
        self.acked = Counter(
            "wslarkbot_webhooks_acked", "Events acked by a protocol-2 bot", ["channel_kind"], registry=r
        )
        self.answered = Counter(
            "wslarkbot_webhooks_answered",
            "Webhook answers by outcome and HTTP status",
            ["channel_kind", "outcome", "status"],
            registry=r,
        )
        self.failed = Counter(
            "wslarkbot_webhooks_failed",
            "Webhook answers that were not 2xx",
            ["channel_kind", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "wslarkbot_webhook_reply_latency_seconds",
            "Seconds from receiving a webhook to answering it",
            ["channel_kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.connects = Counter("wslarkbot_subscriber_connects", "WebSocket subscriptions opened", registry=r)
        self.disconnects = Counter(
            "wslarkbot_subscriber_disconnects", "WebSocket subscriptions closed", registry=r
        )
        self.answers = Counter(
            "wslarkbot_subscriber_answers", "Accepted ack/reply frames from subscribers", ["kind"], registry=r
        )
        # Children per label set, created once: the hot path is a dict lookup and .inc().
        self._received = {
            (ck, k): self.received.labels(ck, k) for ck in _KINDS for k in ("event", "challenge", "callback")
        }
        self._delivered = {ck: self.delivered.labels(ck) for ck in _KINDS}
        self._frames = {ck: self.frames.labels(ck) for ck in _KINDS}
        self._acked = {ck: self.acked.labels(ck) for ck in _KINDS}
        self._latency = {ck: self.latency.labels(ck) for ck in _KINDS}
        self._answered: dict[tuple[str, str, int], Counter] = {}
        self._failed: dict[tuple[str, str], Counter] = {}
        self._answers = {k: self.answers.labels(k) for k in ("ack", "reply")}

    def webhook_answered(
        self,
        channel: str,
        request_id: str,
        kind: str,
        delivered: int,
        status: int,
        outcome: str,
        latency: float,
    ) -> None:
        ck = channel_kind(channel)
        child = self._received.get((ck, kind))
        if child is None:
            child = self._received[(ck, kind)] = self.received.labels(ck, kind)
        child.inc()
        if delivered:
            self._delivered[ck].inc()
            self._frames[ck].inc(delivered)
        if outcome.startswith("ack-"):
            self._acked[ck].inc()
        key = (ck, outcome, status)
        answered = self._answered.get(key)
        if answered is None:
            answered = self._answered[key] = self.answered.labels(ck, outcome, str(status))
        answered.inc()
        if not 200 <= status < 300:
            fkey = (ck, outcome)
            failed = self._failed.get(fkey)
            if failed is None:
                failed = self._failed[fkey] = self.failed.labels(ck, outcome)
            failed.inc()
        self._latency[ck].observe(latency)

    def subscriber_connected(self, sub: Subscriber) -> None:
        self.connects.inc()

    def subscriber_disconnected(self, sub: Subscriber, close_code: int | None) -> None:
        self.disconnects.inc()

    def subscriber_answered(self, sub: Subscriber, request_id: str, kind: str) -> None:
        child = self._answers.get(kind)
        if child is not None:
            child.inc()


class RelayCollector(Collector):
    """Gauges read at scrape time from the relay app: hub counts, buffers, Redis, gateway, rejections."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def describe(self) -> list[Metric]:
        """Nothing up front: the metrics are produced at scrape time (avoids a collect() at registration)."""
        return []

    def collect(self) -> Iterator[Metric]:
        state = self.app[STATE_KEY]
        hub = state.hub
        counts = hub.counts()
        yield GaugeMetricFamily(
            "wslarkbot_subscribers", "Connected subscribers", value=counts.get("subscribers", 0)
        )
        yield GaugeMetricFamily(
            "wslarkbot_channels", "Channels with subscribers", value=counts.get("channels", 0)
        )
        yield GaugeMetricFamily(
            "wslarkbot_pending_replies", "Webhooks waiting for a bot", value=counts.get("pending_replies", 0)
        )
        total = biggest = 0
        for sub in hub.subscribers():
            size = sub.buffered_bytes
            total += size
            biggest = max(biggest, size)
        buffers = GaugeMetricFamily(
            "wslarkbot_subscriber_buffer_bytes",
            "Bytes queued for this process's subscribers",
            labels=["stat"],
        )
        buffers.add_metric(["sum"], total)
        buffers.add_metric(["max"], biggest)
        yield buffers
        yield CounterMetricFamily(
            "wslarkbot_rejected",
            "Requests or messages refused for bad input or a limit",
            value=state.stats.rejected,
        )
        redis = hub.describe().get("redis")
        connected = redis.get("connected") if isinstance(redis, dict) else None
        if isinstance(connected, bool):
            yield GaugeMetricFamily(
                "wslarkbot_redis_connected", "1 while the Redis hub's connection is up", value=int(connected)
            )
        gateway = self.app.get(GATEWAY_KEY)
        if gateway is not None:
            conns = GaugeMetricFamily(
                "wslarkbot_gateway_connections", "Long-connection clients per gateway app", labels=["app_id"]
            )
            for app_id, n in sorted(gateway.counts().items()):
                conns.add_metric([app_id], n)
            yield conns
        info = GaugeMetricFamily("wslarkbot_build_info", "wslarkbot version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """``(body, content type)``: Prometheus text format, or OpenMetrics when ``accept`` asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
