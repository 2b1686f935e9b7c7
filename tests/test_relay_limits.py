"""Each relay limit answers a 4xx/503 with a reason, and the relay keeps serving right after."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wslarkbot.relay import RelayConfig, run_relay
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import SIGNED, recv_json, test_config

EVENT = {"schema": "2.0", "header": {"event_type": "im.message.receive_v1", "event_id": "e"}, "event": {}}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def assert_still_serves(relay: RunningRelay, http: httpx.AsyncClient) -> None:
    """A legacy subscriber still gets a good webhook, answered 200."""
    async with connect(relay.ws_url("cli_ok", proto=None)) as ws:
        resp = await http.post(f"{relay.url}/hook/cli_ok", json=EVENT, headers=SIGNED)
        env = await recv_json(ws)
    assert resp.status_code == 200
    assert env["body"] == EVENT


async def ws_refusal(url: str, **kw: object) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, **kw):  # type: ignore[arg-type]
            pass
    return info.value.response.status_code


async def test_body_larger_than_max_body_bytes_is_413(http: httpx.AsyncClient) -> None:
    async with run_relay(test_config(max_body_bytes=1000)) as relay:
        big = {"pad": "x" * 2000}
        resp = await http.post(f"{relay.url}/hook/cli_ok", json=big, headers=SIGNED)
        assert resp.status_code == 413
        assert "larger than 1000 bytes" in resp.json()["msg"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the streamed size is checked
            for _ in range(10):
                yield b" " * 300

        resp2 = await http.post(f"{relay.url}/hook/cli_ok", content=chunks(), headers=SIGNED)
        assert resp2.status_code == 413
        await assert_still_serves(relay, http)
        assert relay.status()["rejected"] == 2


async def test_non_json_webhook_body_is_400_not_500(http: httpx.AsyncClient) -> None:
    async with run_relay(test_config()) as relay:
        for bad in (b"not json", b"\xff\xfe{}"):
            resp = await http.post(f"{relay.url}/hook/cli_ok", content=bad, headers=SIGNED)
            assert resp.status_code == 400
            assert resp.json() == {"msg": "request body is not UTF-8 JSON"}
        await assert_still_serves(relay, http)


@pytest.mark.parametrize("channels", ["bad!name", "a,,b", "x" * 65, "cli_a,%20"])
async def test_bad_channel_names_are_400(http: httpx.AsyncClient, channels: str) -> None:
    async with run_relay(test_config()) as relay:
        assert await ws_refusal(relay.ws_url(channels, proto=None)) == 400
        await assert_still_serves(relay, http)


async def test_bad_app_id_in_webhook_route_is_400(http: httpx.AsyncClient) -> None:
    async with run_relay(test_config()) as relay:
        resp = await http.post(f"{relay.url}/hook/{'x' * 65}", json=EVENT, headers=SIGNED)
        assert resp.status_code == 400


async def test_too_many_channels_in_one_subscription_is_400(http: httpx.AsyncClient) -> None:
    async with run_relay(test_config(max_channels_per_subscription=3)) as relay:
        status = await ws_refusal(relay.ws_url("c1,c2,c3,c4", proto=None))
        assert status == 400
        async with connect(relay.ws_url("c1,c2,c3", proto=None)):
            pass
        await assert_still_serves(relay, http)


async def test_subscribers_per_channel_limit_is_503_on_subscribe(http: httpx.AsyncClient) -> None:
    async with run_relay(test_config(max_subscribers_per_channel=2)) as relay:
        url = relay.ws_url("cli_x", proto=None)
        async with connect(url), connect(url):
            assert await ws_refusal(url) == 503
            await assert_still_serves(relay, http)


async def test_pending_replies_limit_is_503_for_new_waiting_requests(http: httpx.AsyncClient) -> None:
    config = test_config(max_pending_replies=1, challenge_timeout=2.0)
    async with run_relay(config) as relay, connect(relay.ws_url("cli_a", proto=2)) as ws:
        await recv_json(ws)  # hello
        first = asyncio.ensure_future(http.post(f"{relay.url}/hook/cli_a", json={"challenge": "1"}))
        env = await recv_json(ws)
        second = await http.post(f"{relay.url}/hook/cli_a", json={"challenge": "2"})
        assert second.status_code == 503
        assert "too many requests waiting" in second.json()["msg"]
        rid = env["headers"]["x-request-id"]
        await ws.send(json.dumps({"type": "reply", "request_id": rid, "body": {"challenge": "1"}}))
        assert (await first).json() == {"challenge": "1"}
        await assert_still_serves(relay, http)


async def test_websocket_message_larger_than_limit_closes_1009(http: httpx.AsyncClient) -> None:
    async with run_relay(test_config(max_ws_message_bytes=1024)) as relay:
        async with connect(relay.ws_url("cli_a", proto=2)) as ws:
            await recv_json(ws)
            await ws.send("x" * 5000)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 3)
        assert ws.close_code == 1009
        await assert_still_serves(relay, http)


async def test_plain_get_on_sub_is_426_with_reason(http: httpx.AsyncClient) -> None:
    async with run_relay(test_config()) as relay:
        resp = await http.get(f"{relay.url}/sub/cli_a")
        assert resp.status_code == 426
        assert "WebSocket" in resp.json()["msg"]


def test_config_rejects_non_positive_limits() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        RelayConfig(max_body_bytes=0)


async def test_slow_subscriber_is_disconnected_instead_of_growing_memory(http: httpx.AsyncClient) -> None:
    """A subscriber that stops reading is dropped when its buffer is full; later webhooks get 503."""
    config = test_config(max_subscriber_buffer_bytes=300_000)
    payload = {"pad": "x" * 200_000}
    async with (
        run_relay(config) as relay,
        connect(relay.ws_url("cli_slow", proto=None), max_queue=1, close_timeout=0.5) as ws,
    ):
        statuses = []
        for _ in range(300):  # loopback kernel buffers hold a few MB; 300 x 200 KB is far more
            resp = await http.post(f"{relay.url}/hook/cli_slow", json=payload, headers=SIGNED)
            statuses.append(resp.status_code)
            if resp.status_code == 503:
                break
        assert statuses[-1] == 503
        assert set(statuses[:-1]) == {200}
        assert relay.status()["rejected"] == 1  # the overload, logged once
        await assert_still_serves(relay, http)
        print(f"slow subscriber dropped after {len(statuses) - 1} frames of 200 KB")
    assert ws.close_code in (1013, 1006, None)


def test_a_huge_channel_list_is_refused_before_any_per_name_work() -> None:
    """16,000 names from an unauthenticated client (issue 19): refused by the cap, counted in one pass."""
    from wslarkbot.relay.limits import LimitExceeded, parse_channel_list

    with pytest.raises(LimitExceeded) as refused:
        parse_channel_list(",".join(f"cli_{i}" for i in range(16_000)), max_channels=64)
    assert refused.value.status == 400 and "16000" in refused.value.reason
    assert parse_channel_list("cli_a,cli_b,cli_a", max_channels=2) == ("cli_a", "cli_b")


def test_names_with_a_trailing_newline_are_not_channels_or_request_ids() -> None:
    from wslarkbot.wire import CHANNEL_RE, REQUEST_ID_RE

    assert CHANNEL_RE.match("cli_a") and not CHANNEL_RE.match("cli_a\n")
    assert REQUEST_ID_RE.match("r1") and not REQUEST_ID_RE.match("r1\n")
