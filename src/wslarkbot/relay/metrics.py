"""Prometheus metrics of one relay app, served as ``GET /metrics`` (text format; OpenMetrics on request).

Each relay app has its own :class:`prometheus_client.CollectorRegistry` (never the process-global one), so
several relays in one process (tests, embedding) do not mix their numbers.

Counters are updated by :class:`MetricsObserver` on the hot path as plain ``int`` values in dicts (no
prometheus-client locks or value objects per increment) and turned into metric families at scrape time.
Gauges are read from the hub and the relay state when Prometheus scrapes.

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
``wslarkbot_channel_webhooks_total{channel,outcome}``      answers per channel (``--metrics-per-channel``,
                                                           at most ``--metrics-channel-cap`` channels)
``wslarkbot_subscriber_connects_total``                    WebSocket subscriptions opened
``wslarkbot_subscriber_disconnects_total``                 WebSocket subscriptions closed
``wslarkbot_subscriber_answers_total{kind}``               accepted ``ack``/``reply`` frames
``wslarkbot_rejected_total``                               refused requests/messages (``/status``)
``wslarkbot_subscribers``, ``wslarkbot_channels``          gauges from the hub
``wslarkbot_pending_replies``                              webhooks waiting for a bot right now
``wslarkbot_subscriber_buffer_bytes{stat="sum"|"max"}``    bytes queued for this process's subscribers
``wslarkbot_buffer_stalled_events``                        buffered events unacked while a bot is connected
                                                           (``--buffer`` only; relay/stall.py)
``wslarkbot_redis_connected``                              1/0, only with the Redis hub
``wslarkbot_gateway_connections{app_id}``                  long-connection clients (gateway mounted)
``wslarkbot_build_info{version}``                          always 1
========================================================  =========================================

Redis: the collector reads ``hub.describe()["redis"]["connected"]`` (what ``/status`` shows); the gauge is
absent for the in-memory hub.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .. import __version__
from .observe import RelayObserver, channel_kind
from .outcomes import WebhookOutcome
from .routes import STATE_KEY

if TYPE_CHECKING:
    from aiohttp import web

    from .hub import Subscriber

__all__ = ["LATENCY_BUCKETS", "MetricsObserver", "RelayCollector", "render"]

#: Seconds. Feishu's deadlines are 1 s (challenge) and 3 s (everything else); the relay waits 0.9/2.8 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.9, 1.0, 2.0, 2.8, 3.0, 5.0)

_KINDS = ("hook", "org")
#: The ``le`` label of each bucket, formatted as prometheus_client formats them ("1.0", "0.9", ...).
_LE = tuple(floatToGoString(b) for b in LATENCY_BUCKETS)


#: The channel label of answers past ``metrics_channel_cap`` distinct channels.
OTHER_CHANNEL = "_other"


class MetricsObserver(RelayObserver):
    """Counts the relay's events into ``registry``.

    The hot path (:meth:`webhook_answered`, once per webhook) only bumps plain ``int`` counters in dicts:
    no ``prometheus_client`` metric objects, so no per-increment lock and no per-child value object.
    Everything runs on the relay's event loop, scrapes included, so nothing needs a lock. The registered
    :class:`_CountersCollector` turns the counters into metric families when Prometheus scrapes.
    """

    def __init__(self, registry: CollectorRegistry, *, channel_cap: int | None = None) -> None:
        """
        Args:
            channel_cap: label answers by channel too (``metrics_per_channel``) for at most this many
                channels; later ones count as ``_other`` (so a flood of app ids cannot grow /metrics).
        """
        self.registry = registry
        self.channel_cap = channel_cap
        #: (channel or "_other", outcome) -> answers, with channel_cap
        self.by_channel: dict[tuple[str, WebhookOutcome], int] = {}
        self._labelled: set[str] = set()
        kinds = ("event", "challenge", "callback")
        # Pre-created keys, so the series exist (at 0) before the first webhook, as before.
        self.received: dict[tuple[str, str], int] = {(ck, k): 0 for ck in _KINDS for k in kinds}
        self.delivered: dict[str, int] = dict.fromkeys(_KINDS, 0)
        self.frames: dict[str, int] = dict.fromkeys(_KINDS, 0)
        self.acked: dict[str, int] = dict.fromkeys(_KINDS, 0)
        self.answered: dict[tuple[str, WebhookOutcome, int], int] = {}
        self.failed: dict[tuple[str, WebhookOutcome], int] = {}
        #: per channel kind: non-cumulative counts per bucket of :data:`LATENCY_BUCKETS`, then +Inf
        self.latency_buckets: dict[str, list[int]] = {ck: [0] * (len(LATENCY_BUCKETS) + 1) for ck in _KINDS}
        self.latency_sum: dict[str, float] = dict.fromkeys(_KINDS, 0.0)
        self.connects = 0
        self.disconnects = 0
        self.answers: dict[str, int] = {"ack": 0, "reply": 0, "nack": 0}
        registry.register(_CountersCollector(self))

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
        ck = channel_kind(channel)
        key = (ck, kind)
        received = self.received
        received[key] = received.get(key, 0) + 1
        if delivered:
            self.delivered[ck] += 1
            self.frames[ck] += delivered
        if outcome.acked:
            self.acked[ck] += 1
        akey = (ck, outcome, status)
        answered = self.answered
        answered[akey] = answered.get(akey, 0) + 1
        if not 200 <= status < 300:
            fkey = (ck, outcome)
            self.failed[fkey] = self.failed.get(fkey, 0) + 1
        if self.channel_cap is not None:
            label = channel
            if channel not in self._labelled:
                if len(self._labelled) < self.channel_cap:
                    self._labelled.add(channel)
                else:
                    label = OTHER_CHANNEL
            ckey = (label, outcome)
            self.by_channel[ckey] = self.by_channel.get(ckey, 0) + 1
        # bisect_left: the first bucket whose bound is >= latency (Prometheus' ``le``); past the end: +Inf.
        self.latency_buckets[ck][bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1
        self.latency_sum[ck] += latency

    def subscriber_connected(self, sub: Subscriber) -> None:
        self.connects += 1

    def subscriber_disconnected(self, sub: Subscriber, close_code: int | None) -> None:
        self.disconnects += 1

    def subscriber_answered(self, sub: Subscriber, request_id: str, kind: str) -> None:
        if kind in self.answers:
            self.answers[kind] += 1


class _CountersCollector(Collector):
    """The :class:`MetricsObserver`'s counters and latency histogram, as metric families at scrape time."""

    def __init__(self, metrics: MetricsObserver) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        """Nothing up front (as :class:`RelayCollector`)."""
        return []

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        received = CounterMetricFamily(
            "wslarkbot_webhooks_received", "Webhooks published", labels=["channel_kind", "kind"]
        )
        for (ck, kind), n in list(m.received.items()):
            received.add_metric([ck, kind], n)
        yield received
        for name, doc, values in (
            ("wslarkbot_webhooks_delivered", "Webhooks received by at least one subscriber", m.delivered),
            ("wslarkbot_frames_delivered", "Envelope frames sent (one per subscriber)", m.frames),
            ("wslarkbot_webhooks_acked", "Events acked by a protocol-2 bot", m.acked),
        ):
            family = CounterMetricFamily(name, doc, labels=["channel_kind"])
            for ck, n in list(values.items()):
                family.add_metric([ck], n)
            yield family
        answered = CounterMetricFamily(
            "wslarkbot_webhooks_answered",
            "Webhook answers by outcome and HTTP status",
            labels=["channel_kind", "outcome", "status"],
        )
        for (ck, outcome, status), n in list(m.answered.items()):
            answered.add_metric([ck, outcome.value, str(status)], n)
        yield answered
        failed = CounterMetricFamily(
            "wslarkbot_webhooks_failed",
            "Webhook answers that were not 2xx",
            labels=["channel_kind", "outcome"],
        )
        for (ck, outcome), n in list(m.failed.items()):
            failed.add_metric([ck, outcome.value], n)
        yield failed
        if m.channel_cap is not None:
            per_channel = CounterMetricFamily(
                "wslarkbot_channel_webhooks",
                f"Webhook answers by channel (at most {m.channel_cap} channels; the rest as _other)",
                labels=["channel", "outcome"],
            )
            for (channel, outcome), n in list(m.by_channel.items()):
                per_channel.add_metric([channel, outcome.value], n)
            yield per_channel
        latency = HistogramMetricFamily(
            "wslarkbot_webhook_reply_latency_seconds",
            "Seconds from receiving a webhook to answering it",
            labels=["channel_kind"],
        )
        for ck, counts in list(m.latency_buckets.items()):
            cumulative, buckets = 0, []
            for bound, n in zip((*_LE, "+Inf"), counts, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            latency.add_metric([ck], buckets, m.latency_sum[ck])
        yield latency
        yield CounterMetricFamily(
            "wslarkbot_subscriber_connects", "WebSocket subscriptions opened", value=m.connects
        )
        yield CounterMetricFamily(
            "wslarkbot_subscriber_disconnects", "WebSocket subscriptions closed", value=m.disconnects
        )
        answers = CounterMetricFamily(
            "wslarkbot_subscriber_answers", "Accepted ack/reply frames from subscribers", labels=["kind"]
        )
        for kind, n in list(m.answers.items()):
            answers.add_metric([kind], n)
        yield answers


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
        if state.config.buffer:
            yield GaugeMetricFamily(
                "wslarkbot_buffer_stalled_events",
                "Buffered events unacked for buffer_stall_after seconds while their channel had a subscriber",
                value=state.buffer_stalled,
            )
        redis = hub.describe().get("redis")
        connected = redis.get("connected") if isinstance(redis, dict) else None
        if isinstance(connected, bool):
            yield GaugeMetricFamily(
                "wslarkbot_redis_connected", "1 while the Redis hub's connection is up", value=int(connected)
            )
        gateway = self.app[STATE_KEY].gateway
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
