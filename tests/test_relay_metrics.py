"""``GET /metrics``: Prometheus counters, histogram and gauges of a real relay after real webhooks."""

from __future__ import annotations

import asyncio
import base64
import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from system_programs import require
from wslarkbot.relay import run_relay
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import SIGNED, RedisServer, recv_json, test_config

EVENT = {"schema": "2.0", "header": {"event_type": "im.message.receive_v1", "event_id": "e1"}, "event": {}}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``{(sample name, labels): value}`` from Prometheus text format (parsed by prometheus-client)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def post_event(http: httpx.AsyncClient, url: str, request_id: str) -> httpx.Response:
    return await http.post(
        url,
        content=json.dumps(EVENT).encode(),
        headers={**SIGNED, "Content-Type": "application/json", "X-Request-Id": request_id},
    )


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    async with run_relay(test_config(allow_anonymous_orgs=True)) as r:
        yield r


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def scrape(http: httpx.AsyncClient, relay: RunningRelay, **kw: Any) -> dict[Any, float]:
    resp = await http.get(f"{relay.url}/metrics", **kw)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=")
    return samples(resp.text)


async def test_metrics_count_acked_delivered_and_no_subscriber_webhooks(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with connect(relay.ws_url("cli_a", proto=2)) as ws, connect(relay.ws_url("cli_old", proto=None)):
        assert (await recv_json(ws))["type"] == "hello"
        during = await scrape(http, relay)
        assert value(during, "wslarkbot_subscribers") == 2
        assert value(during, "wslarkbot_channels") == 2

        answer = asyncio.ensure_future(post_event(http, f"{relay.url}/hook/cli_a", "req-ack"))
        envelope = await recv_json(ws)
        assert envelope["headers"]["x-request-id"] == "req-ack"
        await ws.send(json.dumps({"type": "ack", "request_id": "req-ack"}))
        assert (await answer).status_code == 200

        assert (await post_event(http, f"{relay.url}/hook/cli_old", "req-old")).status_code == 200
        assert (await post_event(http, f"{relay.url}/hook/cli_nobody", "req-none")).status_code == 503

    m = await scrape(http, relay)
    assert value(m, "wslarkbot_webhooks_received_total", channel_kind="hook", kind="event") == 3
    assert value(m, "wslarkbot_webhooks_delivered_total", channel_kind="hook") == 2
    assert value(m, "wslarkbot_frames_delivered_total", channel_kind="hook") == 2
    assert value(m, "wslarkbot_webhooks_acked_total", channel_kind="hook") == 1
    answered = "wslarkbot_webhooks_answered_total"
    assert value(m, answered, channel_kind="hook", outcome="ack-ws", status="200") == 1
    assert value(m, answered, channel_kind="hook", outcome="delivered", status="200") == 1
    assert value(m, answered, channel_kind="hook", outcome="no-subscriber", status="503") == 1
    assert value(m, "wslarkbot_webhooks_failed_total", channel_kind="hook", outcome="no-subscriber") == 1
    assert value(m, "wslarkbot_subscriber_answers_total", kind="ack") == 1
    assert value(m, "wslarkbot_subscriber_connects_total") == 2


async def test_metrics_expose_the_reply_latency_histogram(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    await post_event(http, f"{relay.url}/hook/cli_x", "req-1")
    await post_event(http, f"{relay.url}/org_acme/cli_x", "req-2")
    m = await scrape(http, relay)
    name = "wslarkbot_webhook_reply_latency_seconds"
    assert value(m, f"{name}_count", channel_kind="hook") == 1
    assert value(m, f"{name}_count", channel_kind="org") == 1
    assert value(m, f"{name}_bucket", channel_kind="hook", le="+Inf") == 1
    assert value(m, f"{name}_bucket", channel_kind="hook", le="1.0") == 1  # Feishu's 1 s deadline is a bucket
    assert value(m, f"{name}_sum", channel_kind="hook") > 0
    assert value(m, "wslarkbot_webhooks_failed_total", channel_kind="org", outcome="no-subscriber") == 1


async def test_metrics_report_pending_replies_and_subscriber_buffers(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with connect(relay.ws_url("cli_a", proto=2)) as ws:
        await recv_json(ws)
        answer = asyncio.ensure_future(post_event(http, f"{relay.url}/hook/cli_a", "req-wait"))
        await recv_json(ws)  # the relay published it: the request now waits for our ack
        m = await scrape(http, relay)
        assert value(m, "wslarkbot_pending_replies") == 1
        assert value(m, "wslarkbot_subscriber_buffer_bytes", stat="max") >= 0
        assert ("wslarkbot_subscriber_buffer_bytes", frozenset({("stat", "sum")})) in m
        await ws.send(json.dumps({"type": "ack", "request_id": "req-wait"}))
        assert (await answer).status_code == 200
    assert value(await scrape(http, relay), "wslarkbot_pending_replies") == 0


async def test_metrics_never_carry_channel_names_or_request_ids(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    """Label values come from small fixed sets, so callers cannot grow the series count."""
    await post_event(http, f"{relay.url}/hook/cli_secret_app", "req-secret-id")
    text = (await http.get(f"{relay.url}/metrics")).text
    assert "cli_secret_app" not in text
    assert "req-secret-id" not in text
    assert "wslarkbot_build_info" in text


async def test_each_relay_has_its_own_metrics_registry(http: httpx.AsyncClient) -> None:
    async with run_relay(test_config()) as one, run_relay(test_config()) as two:
        await post_event(http, f"{one.url}/hook/cli_a", "req-1")
        m_one, m_two = await scrape(http, one), await scrape(http, two)
    assert value(m_one, "wslarkbot_webhooks_received_total", channel_kind="hook", kind="event") == 1
    assert value(m_two, "wslarkbot_webhooks_received_total", channel_kind="hook", kind="event") == 0


async def test_metrics_are_open_by_default(relay: RunningRelay, http: httpx.AsyncClient) -> None:
    assert (await http.get(f"{relay.url}/metrics")).status_code == 200


async def test_metrics_speak_openmetrics_when_the_scraper_asks(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    resp = await http.get(f"{relay.url}/metrics", headers={"Accept": "application/openmetrics-text"})
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    assert resp.text.rstrip().endswith("# EOF")


async def test_metrics_auth_requires_the_admin_credentials(http: httpx.AsyncClient) -> None:
    config = test_config(admin_user="admin", admin_password="s3cret", metrics_auth=True)
    async with run_relay(config) as relay:
        refused = await http.get(f"{relay.url}/metrics")
        wrong = await http.get(f"{relay.url}/metrics", headers=basic("admin", "nope"))
        ok = await http.get(f"{relay.url}/metrics", headers=basic("admin", "s3cret"))
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic ")
    assert wrong.status_code == 401
    assert ok.status_code == 200
    assert "wslarkbot_subscribers" in ok.text


async def test_metrics_show_the_redis_link_state_with_a_redis_hub(tmp_path: pathlib.Path) -> None:
    require("redis-server")
    server = await RedisServer(tmp_path).start()
    try:
        async with (
            run_relay(test_config(redis_url=server.url)) as relay,
            httpx.AsyncClient(timeout=5) as http,
        ):
            m = await scrape(http, relay)
    finally:
        await server.stop()
    assert value(m, "wslarkbot_redis_connected") == 1


async def test_metrics_have_no_redis_gauge_with_the_in_memory_hub(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    assert ("wslarkbot_redis_connected", frozenset()) not in await scrape(http, relay)


async def test_gateway_webhooks_are_counted_and_its_connections_exposed(tmp_path: pathlib.Path) -> None:
    """Apps served over the long-connection gateway report to the same metrics."""
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps({"apps": {"cli_gw": {"app_secret": "s", "verification_token": "vt"}}}))
    challenge = {"type": "url_verification", "challenge": "c1", "token": "vt"}
    async with (
        run_relay(test_config(gateway_config=str(path))) as relay,
        httpx.AsyncClient(timeout=5) as http,
    ):
        assert (await http.post(f"{relay.url}/hook/cli_gw", json=challenge)).status_code == 200
        assert (
            await post_event(http, f"{relay.url}/hook/cli_gw", "req-gw")
        ).status_code == 401  # bad signature
        m = await scrape(http, relay)
    answered = "wslarkbot_webhooks_answered_total"
    assert value(m, answered, channel_kind="hook", outcome="challenge-gateway", status="200") == 1
    assert value(m, answered, channel_kind="hook", outcome="rejected", status="401") == 1
    assert value(m, "wslarkbot_webhook_reply_latency_seconds_count", channel_kind="hook") == 2
    assert value(m, "wslarkbot_gateway_connections", app_id="cli_gw") == 0
