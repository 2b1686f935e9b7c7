"""``nack`` (protocol 2): a bot says it did not handle a request, and the relay answers Feishu at once with
one and the same 500, so Feishu delivers the event again (issue 18). Both servers, both hubs; real
sockets, no mocks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from delivery_helpers import assert_nothing_more, event
from system_programs import require
from wslarkbot.relay import run_relay
from wslarkbot.relay.publish import NACKED
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import SIGNED, RedisServer, recv_json, test_config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=[True, False], ids=["fast-path", "aiohttp"])
async def relay(request: pytest.FixtureRequest) -> AsyncIterator[RunningRelay]:
    # ack_timeout far beyond the test: a 500 can only come from the nack, not from a timeout (504)
    async with run_relay(test_config(fast_path=request.param, ack_timeout=20.0, buffer="cli_buf*")) as r:
        yield r


async def nack(ws: ClientConnection, env: dict[str, Any]) -> None:
    await ws.send(json.dumps({"type": "nack", "request_id": env["headers"]["x-request-id"]}))


async def subscribe(relay: RunningRelay, channel: str) -> ClientConnection:
    ws = await connect(relay.ws_url(channel))
    assert (await recv_json(ws))["type"] == "hello"
    return ws


@pytest.mark.parametrize("channel", ["cli_plain", "cli_buffered"])
async def test_a_nacked_event_is_answered_500_at_once_and_a_buffered_one_is_not_kept(
    relay: RunningRelay, channel: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        async with await subscribe(relay, channel) as ws:
            call = asyncio.ensure_future(
                http.post(f"{relay.url}/hook/{channel}", json=event(1), headers=SIGNED)
            )
            await nack(ws, await recv_json(ws))
            resp = await call
            assert (resp.status_code, resp.content) == (NACKED.status, NACKED.body)
            await assert_nothing_more(ws)  # no error frame: the nack was accepted
        status = (await http.get(f"{relay.url}/status")).json()
        assert status["nacks"] == 1 and status["acks"] == 0
        # Feishu delivers it again; the buffer must not hand it out a second time meanwhile
        async with await subscribe(relay, channel) as again:
            await assert_nothing_more(again)


async def test_a_nacked_card_callback_is_answered_the_same_500(relay: RunningRelay) -> None:
    callback = {
        "schema": "2.0",
        "header": {"event_type": "card.action.trigger", "event_id": "cb"},
        "event": {},
    }
    async with httpx.AsyncClient(timeout=10) as http, await subscribe(relay, "cli_cb") as ws:
        call = asyncio.ensure_future(http.post(f"{relay.url}/hook/cli_cb", json=callback, headers=SIGNED))
        await nack(ws, await recv_json(ws))
        resp = await call
    assert (resp.status_code, resp.content) == (NACKED.status, NACKED.body)


async def test_a_nack_on_another_node_answers_the_webhook_waiting_here(tmp_path: Any) -> None:
    require("redis-server")
    server = await RedisServer(tmp_path).start()
    config = test_config(redis_url=server.url, ack_timeout=20.0)
    try:
        async with (
            run_relay(config) as a,
            run_relay(config) as b,
            httpx.AsyncClient(timeout=10) as http,
            await subscribe(b, "cli_far") as ws,
        ):
            call = asyncio.ensure_future(http.post(f"{a.url}/hook/cli_far", json=event(1), headers=SIGNED))
            await nack(ws, await recv_json(ws))
            resp = await call
        assert (resp.status_code, resp.content) == (NACKED.status, NACKED.body)
    finally:
        await server.stop()


async def test_a_resent_answer_to_a_request_answered_long_ago_is_ignored_silently(
    relay: RunningRelay,
) -> None:
    async with await subscribe(relay, "cli_again") as ws:
        await ws.send(json.dumps({"type": "ack", "request_id": "gone-1", "resend": True}))
        await assert_nothing_more(ws)  # a copy sent again after a reconnect: no error frame
        await ws.send(json.dumps({"type": "ack", "request_id": "gone-2"}))
        error = await recv_json(ws)
        assert (error["type"], error["request_id"]) == ("error", "gone-2")
