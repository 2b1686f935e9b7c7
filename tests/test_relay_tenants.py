"""Per-tenant limits and per-channel metrics (issue 21): one noisy tenant cannot starve the rest."""

from __future__ import annotations

import pathlib

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from fake_clock import Clock
from wslarkbot.exceptions import ConfigurationError
from wslarkbot.relay import run_relay
from wslarkbot.relay.config_file import load_config_file
from wslarkbot.relay.tenants import MAX_BUCKETS, TenantGate, TenantLimit, parse_tenants
from wslarkbot.relay.testing import SIGNED, recv_json, test_config


def test_a_tenant_gets_its_rate_with_a_one_second_burst_and_a_retry_after() -> None:
    clock = Clock()
    limits = {"org_noisy": TenantLimit(events_per_second=2), "*": TenantLimit(events_per_second=100)}
    gate = TenantGate(limits, clock=clock)
    assert [gate.check_event("org_noisy") for _ in range(2)] == [None, None]
    over = gate.check_event("org_noisy")
    assert over is not None and (over.status, over.retry_after) == (429, 1)
    assert gate.check_event("org_quiet") is None  # another tenant is not affected
    clock.now += 0.5
    assert gate.check_event("org_noisy") is None  # one token back after half a second
    assert gate.check_event("org_noisy") is not None


def test_subscriber_limits_and_no_limits_by_default() -> None:
    gate = TenantGate({"cli_small": TenantLimit(max_subscribers=2)})
    assert gate.check_subscriber("cli_small", 1) is None
    refused = gate.check_subscriber("cli_small", 2)
    assert refused is not None and refused.status == 503
    assert gate.check_subscriber("cli_other", 10_000) is None
    assert TenantGate({}).check_event("anything") is None


def test_the_rate_buckets_are_bounded() -> None:
    gate = TenantGate({"*": TenantLimit(events_per_second=1)})
    for i in range(MAX_BUCKETS + 10):
        gate.check_event(f"cli_{i}")
    assert len(gate._buckets) == MAX_BUCKETS


def test_tenant_tables_are_checked(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[tenants."*"]\nevents_per_second = 20\n[tenants.org_acme]\nmax_subscribers = 3\n')
    assert load_config_file(path)["tenants"] == {
        "*": TenantLimit(events_per_second=20.0),
        "org_acme": TenantLimit(max_subscribers=3),
    }
    for bad in ({"org_a": {"events_per_second": 0}}, {"org_a": {"rate": 1}}, {"org_a": 5}, [1]):
        with pytest.raises(ConfigurationError):
            parse_tenants(bad, "relay.toml")


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "aiohttp"])
async def test_an_event_over_its_tenants_rate_is_429_and_other_tenants_go_on(fast_path: bool) -> None:
    config = test_config(fast_path=fast_path, tenants={"cli_noisy": TenantLimit(events_per_second=1)})
    async with (
        run_relay(config) as relay,
        httpx.AsyncClient(timeout=5) as http,
        connect(relay.ws_url("cli_quiet", proto=None)) as quiet,
    ):
        first = await http.post(f"{relay.url}/hook/cli_noisy", json={"event": {}}, headers=SIGNED)
        second = await http.post(f"{relay.url}/hook/cli_noisy", json={"event": {}}, headers=SIGNED)
        other = await http.post(f"{relay.url}/hook/cli_quiet", json={"event": {}}, headers=SIGNED)
        await recv_json(quiet)
    assert first.status_code == 503  # within the rate (nobody subscribed)
    assert second.status_code == 429 and second.headers["Retry-After"] == "1"
    assert "events per second" in second.json()["msg"]
    assert other.status_code == 200


async def test_a_subscription_over_its_tenants_max_subscribers_is_503() -> None:
    config = test_config(tenants={"cli_small": TenantLimit(max_subscribers=1)})
    async with run_relay(config) as relay, connect(relay.ws_url("cli_small")) as first:
        await recv_json(first)
        with pytest.raises(InvalidStatus) as refused:
            async with connect(relay.ws_url("cli_small")):
                pass
    assert refused.value.response.status_code == 503


async def test_per_channel_metrics_are_opt_in_and_capped() -> None:
    config = test_config(metrics_per_channel=True, metrics_channel_cap=2)
    async with run_relay(config) as relay, httpx.AsyncClient(timeout=5) as http:
        for channel in ("cli_one", "cli_two", "cli_three", "cli_four", "cli_one"):
            await http.post(f"{relay.url}/hook/{channel}", json={"event": {}}, headers=SIGNED)
        text = (await http.get(f"{relay.url}/metrics")).text
    lines = [line for line in text.splitlines() if line.startswith("wslarkbot_channel_webhooks_total{")]
    assert 'wslarkbot_channel_webhooks_total{channel="cli_one",outcome="no-subscriber"} 2.0' in lines
    assert 'wslarkbot_channel_webhooks_total{channel="_other",outcome="no-subscriber"} 2.0' in lines
    assert len(lines) == 3
    async with run_relay(test_config()) as relay, httpx.AsyncClient(timeout=5) as http:
        assert "wslarkbot_channel_webhooks" not in (await http.get(f"{relay.url}/metrics")).text
