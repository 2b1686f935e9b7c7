"""The observers' cores without sockets: bounded memory, rates over an injected clock, metric labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from wslarkbot.relay.dashboard import MAX_CHANNELS, RECENT, DashboardObserver
from wslarkbot.relay.hub import InMemoryHub, Subscriber
from wslarkbot.relay.metrics import MetricsObserver
from wslarkbot.relay.observe import NULL_OBSERVER, Observers, RelayObserver, channel_kind
from wslarkbot.relay.outcomes import WebhookOutcome


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def hub() -> InMemoryHub:
    return InMemoryHub(max_subscribers_per_channel=10, max_pending_replies=10)


def test_channel_kind_is_org_for_org_channels_and_hook_otherwise() -> None:
    assert channel_kind("org_acme") == "org"
    assert channel_kind("cli_a1b2") == "hook"


def test_the_default_observer_accepts_every_event_and_does_nothing() -> None:
    sub = Subscriber(("cli_a",), protocol=2, peer="p", max_buffer_bytes=10)
    NULL_OBSERVER.webhook_answered("cli_a", "r", "event", 1, 200, WebhookOutcome.ACK_WS, 0.1)
    NULL_OBSERVER.subscriber_connected(sub)
    NULL_OBSERVER.subscriber_answered(sub, "r", "ack")
    NULL_OBSERVER.subscriber_disconnected(sub, 1000)


def test_observers_forward_each_event_to_every_observer_in_order() -> None:
    seen: list[str] = []

    class Recorder(RelayObserver):
        def __init__(self, name: str) -> None:
            self.name = name

        def webhook_answered(self, channel: str, request_id: str, *args: object) -> None:
            seen.append(f"{self.name}:{request_id}")

    both = Observers((Recorder("a"), Recorder("b")))
    both.webhook_answered("cli_a", "r1", "event", 0, 503, WebhookOutcome.ERROR, 0.0)
    assert seen == ["a:r1", "b:r1"]


def test_dashboard_keeps_only_the_last_recent_deliveries_newest_first() -> None:
    dash = DashboardObserver(clock=FakeClock())
    for i in range(RECENT + 5):
        dash.webhook_answered("cli_a", f"r{i}", "event", 1, 200, WebhookOutcome.DELIVERED, 0.001)
    recent = dash.snapshot(hub())["recent"]
    assert len(recent) == RECENT
    assert recent[0]["request_id"] == f"r{RECENT + 4}"
    assert recent[-1]["request_id"] == "r5"


def test_dashboard_forgets_the_least_recently_active_channel_beyond_the_limit() -> None:
    dash = DashboardObserver(clock=FakeClock())
    for i in range(MAX_CHANNELS):
        dash.webhook_answered(f"cli_{i}", "r", "event", 0, 503, WebhookOutcome.NO_SUBSCRIBER, 0.0)
    # cli_0 active again
    dash.webhook_answered("cli_0", "r", "event", 0, 503, WebhookOutcome.NO_SUBSCRIBER, 0.0)
    dash.webhook_answered("cli_new", "r", "event", 0, 503, WebhookOutcome.NO_SUBSCRIBER, 0.0)
    assert len(dash.channels) == MAX_CHANNELS
    assert "cli_0" in dash.channels and "cli_new" in dash.channels
    assert "cli_1" not in dash.channels


def test_dashboard_rates_cover_the_last_ten_seconds_only() -> None:
    clock = FakeClock()
    dash = DashboardObserver(clock=clock)
    for _ in range(20):
        dash.webhook_answered("cli_a", "r", "event", 1, 200, WebhookOutcome.DELIVERED, 0.0)
    dash.webhook_answered("cli_a", "r", "event", 0, 503, WebhookOutcome.NO_SUBSCRIBER, 0.0)
    assert dash.snapshot(hub())["rates"] == {"window": 10, "received": 2.1, "failed": 0.1}
    clock.now += 10
    assert dash.snapshot(hub())["rates"]["received"] == 0.0


def test_dashboard_records_connect_time_and_last_ack_of_a_subscriber() -> None:
    clock = FakeClock()
    dash = DashboardObserver(clock=clock)
    sub = Subscriber(("cli_a", "org_x"), protocol=2, peer="10.0.0.1", max_buffer_bytes=100)
    dash.subscriber_connected(sub)
    clock.now += 5
    dash.subscriber_answered(sub, "r1", "ack")
    [row] = dash.snapshot(hub())["subscribers"]
    assert row["connected_since"] == clock.now - 5
    assert row["last_ack"] == clock.now
    assert row["answers"] == 1
    dash.subscriber_disconnected(sub, 1000)
    assert dash.snapshot(hub())["subscribers"] == []


def test_metrics_observer_labels_by_channel_kind_outcome_and_status() -> None:
    registry = CollectorRegistry()
    metrics = MetricsObserver(registry)
    metrics.webhook_answered("org_acme", "r1", "event", 2, 200, WebhookOutcome.ACK_WS, 0.02)
    metrics.webhook_answered("cli_a", "r2", "challenge", 1, 504, WebhookOutcome.TIMEOUT, 0.9)

    def get(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert get("wslarkbot_webhooks_received_total", channel_kind="org", kind="event") == 1
    assert get("wslarkbot_frames_delivered_total", channel_kind="org") == 2
    assert get("wslarkbot_webhooks_acked_total", channel_kind="org") == 1
    assert get("wslarkbot_webhooks_failed_total", channel_kind="hook", outcome="timeout") == 1
    assert get("wslarkbot_webhooks_failed_total", channel_kind="org", outcome="ack-ws") is None
    assert get("wslarkbot_webhooks_answered_total", channel_kind="hook", outcome="timeout", status="504") == 1
    assert get("wslarkbot_webhook_reply_latency_seconds_bucket", channel_kind="hook", le="0.9") == 1
    assert get("wslarkbot_webhook_reply_latency_seconds_bucket", channel_kind="hook", le="0.5") == 0
