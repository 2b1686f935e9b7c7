"""The gateway across relay nodes (``serve --redis``): two real relay nodes share a real redis-server.

The lark-oapi bot (a subprocess running the official client, from test_longconn_sdk.py) bootstraps and
connects through node B; Feishu's webhooks are POSTed to node A. Waits are on conditions: a connection count,
a bot's output line, an HTTP answer.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import websockets

from system_programs import mark
from test_longconn_sdk import (  # noqa: F401  (the `bots` and `http` fixtures)
    APP_ID,
    ENCRYPT_KEY,
    SECRET,
    TOKEN,
    WAIT,
    _message,
    _sample,
    bots_fixture,
    http_fixture,
    push,
)
from wslarkbot.relay import run_relay
from wslarkbot.relay.longconn import GATEWAY_KEY, Gateway
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import RedisServer, ServeProcess, test_config

pytestmark = [
    mark("redis-server"),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.timeout(150),
]


@dataclass
class Cluster:
    redis: RedisServer
    a: RunningRelay
    b: RunningRelay
    gateway_file: pathlib.Path

    @staticmethod
    def gateway(node: RunningRelay) -> Gateway:
        return node.app[GATEWAY_KEY]


def _gateway_file(tmp_path: pathlib.Path, **app: Any) -> pathlib.Path:
    path = tmp_path / "gateway.json"
    knobs = {
        "ping_interval": 1,
        "reconnect_interval": 1,
        "reconnect_nonce": 0,
        "event_timeout": 2.5,
        "ticket_secret": "shared by every node of the test cluster",
    }
    entry = {"app_secret": SECRET, "encrypt_key": ENCRYPT_KEY, "verification_token": TOKEN, **app}
    path.write_text(json.dumps({"gateway": knobs, "apps": {APP_ID: entry}}))
    return path


@pytest.fixture
async def start_cluster(tmp_path: pathlib.Path) -> AsyncIterator[Callable[..., Any]]:
    async with AsyncExitStack() as stack:

        async def start(**app: Any) -> Cluster:
            redis = await RedisServer(tmp_path).start()
            stack.push_async_callback(redis.stop)
            path = _gateway_file(tmp_path, **app)
            config = test_config(redis_url=redis.url, gateway_config=str(path))
            a = await stack.enter_async_context(run_relay(config))
            b = await stack.enter_async_context(run_relay(config))
            return Cluster(redis, a, b, path)

        yield start


@pytest.mark.parametrize("replay", [False, True], ids=["direct", "replay"])
async def test_webhook_at_node_a_reaches_the_bot_connected_to_node_b(
    start_cluster: Any, bots: Any, http: Any, replay: bool
) -> None:
    cluster = await start_cluster(replay=replay)
    bot = await bots(cluster.b.url)
    await cluster.gateway(cluster.b).clients.wait_for_connections(APP_ID, 1, WAIT)
    assert cluster.gateway(cluster.a).counts() == {APP_ID: 0}
    payload = _message("via node a")
    assert await push(http, cluster.a, payload) == (200, {"msg": "success"})
    got = await bot.event("message")
    assert (got["message_id"], got["text_head"]) == (payload["event"]["message"]["message_id"], "via node a")
    if replay:  # the 200 came after the bot's answer: nothing left to replay
        assert await cluster.gateway(cluster.a).replayer.buffered(APP_ID) == 0


@pytest.mark.parametrize("replay", [False, True], ids=["direct", "replay"])
async def test_card_callback_at_node_a_gets_the_toast_from_the_bot_on_node_b(
    start_cluster: Any, bots: Any, http: Any, replay: bool
) -> None:
    cluster = await start_cluster(replay=replay)
    bot = await bots(cluster.b.url)
    await cluster.gateway(cluster.b).clients.wait_for_connections(APP_ID, 1, WAIT)
    payload = _sample("card.action.trigger.json")
    status, body = await push(http, cluster.a, payload)
    assert status == 200
    assert body["toast"] == {"type": "success", "content": "clicked!"}
    assert (await bot.event("card"))["value"] == payload["event"]["action"]["value"]


async def test_event_buffered_at_node_a_is_replayed_to_the_bot_that_connects_to_node_b(
    start_cluster: Any, bots: Any, http: Any
) -> None:
    cluster = await start_cluster(replay=True)
    payload = _message("stored in redis")
    assert await push(http, cluster.a, payload) == (200, {"msg": "success"})
    assert await cluster.gateway(cluster.b).replayer.buffered(APP_ID) == 1  # one buffer for both nodes
    bot = await bots(cluster.b.url)
    assert (await bot.event("message"))["message_id"] == payload["event"]["message"]["message_id"]
    await cluster.gateway(cluster.b).replayer.wait_empty(APP_ID, WAIT)


async def _endpoint(http: aiohttp.ClientSession, node: RunningRelay) -> str:
    async with http.post(
        f"{node.url}/callback/ws/endpoint", json={"AppID": APP_ID, "AppSecret": SECRET}
    ) as r:
        answer = await r.json()
    assert answer["code"] == 0
    return str(answer["data"]["URL"])


async def _handshake_status(http: aiohttp.ClientSession, ws_url: str) -> str:
    async with http.get("http" + ws_url[2:]) as resp:
        return resp.headers.get("handshake-status", "")


async def test_ticket_from_node_a_opens_node_b_once(start_cluster: Any, http: Any) -> None:
    cluster = await start_cluster()
    url = await _endpoint(http, cluster.a)
    on_b = url.replace(f":{cluster.a.port}/", f":{cluster.b.port}/")
    async with websockets.connect(on_b, proxy=None):
        await cluster.gateway(cluster.b).clients.wait_for_connections(APP_ID, 1, WAIT)
        assert await _handshake_status(http, url) == "500"  # already used (on the other node): retryable


async def test_connection_limit_counts_the_connections_of_every_node(start_cluster: Any, http: Any) -> None:
    cluster = await start_cluster(max_connections=1)
    async with websockets.connect(await _endpoint(http, cluster.a), proxy=None):
        await cluster.gateway(cluster.a).clients.wait_for_connections(APP_ID, 1, WAIT)
        async with http.get("http" + (await _endpoint(http, cluster.b))[2:]) as resp:
            assert resp.headers["handshake-status"] == "514"
            assert resp.headers["handshake-autherrcode"] == "1000040350"
    await cluster.gateway(cluster.a).clients.wait_for_connections(APP_ID, 0, WAIT)
    url = await _endpoint(http, cluster.b)  # the slot is free again, on any node
    async with websockets.connect(url, proxy=None):
        await cluster.gateway(cluster.b).clients.wait_for_connections(APP_ID, 1, WAIT)


async def test_event_on_a_bot_killed_on_node_b_is_redelivered_to_a_bot_on_node_a(
    start_cluster: Any, bots: Any, http: Any
) -> None:
    cluster = await start_cluster(replay=True)
    hub_b = cluster.gateway(cluster.b).clients
    stuck = await bots(cluster.b.url, block=True)
    await hub_b.wait_for_connections(APP_ID, 1, WAIT)
    payload = _message("survive a dead bot")
    assert await push(http, cluster.a, payload) == (200, {"msg": "success"})  # after event_timeout
    assert (await stuck.event("message"))["text_head"] == "survive a dead bot"
    stuck.proc.kill()  # SIGKILL before answering
    await hub_b.wait_for_connections(APP_ID, 0, WAIT)
    fresh = await bots(cluster.a.url)
    assert (await fresh.event("message"))["message_id"] == payload["event"]["message"]["message_id"]
    await cluster.gateway(cluster.a).replayer.wait_empty(APP_ID, WAIT)


async def test_event_held_by_a_sigkilled_relay_node_is_replayed_by_another_node(
    start_cluster: Any, bots: Any, http: Any
) -> None:
    """Node C (a ``wslarkbot serve`` process) dies with the event leased to it; the lease lapses (10 s)
    and node A's pump, polling every 5 s, replays it to a bot connected to A."""
    cluster = await start_cluster(replay=True)
    c = await ServeProcess.start(
        "--port", "0", "--redis", cluster.redis.url, "--gateway-config", str(cluster.gateway_file)
    )  # fmt: skip
    try:
        stuck = await bots(c.url, block=True)
        payload = _message("outlive the node")
        await stuck.wait_line(lambda s: "connected to" in s)
        assert await push(http, cluster.a, payload) == (200, {"msg": "success"})
        assert (await stuck.event("message"))["text_head"] == "outlive the node"
        c.kill()  # SIGKILL: no release, no goodbye; the entry stays leased to C until the lease lapses
        await stuck.stop()
        fresh = await bots(cluster.a.url)
        assert (await fresh.event("message"))["message_id"] == payload["event"]["message"]["message_id"]
        await cluster.gateway(cluster.a).replayer.wait_empty(APP_ID, WAIT)
    finally:
        await c.stop()


@pytest.mark.parametrize("replay", [False, True], ids=["direct", "replay"])
async def test_after_a_redis_restart_a_webhook_at_node_a_reaches_the_bot_still_connected_to_node_b(
    start_cluster: Any, bots: Any, http: Any, replay: bool
) -> None:
    """Issue 16 for the gateway: Redis SIGKILLed and started again (no persistence) while the lark-oapi bot
    stays connected; answers during and after the outage are 200 only for events the bot received."""
    cluster = await start_cluster(replay=replay)
    bot = await bots(cluster.b.url)
    await cluster.gateway(cluster.b).clients.wait_for_connections(APP_ID, 1, WAIT)
    await cluster.redis.stop()
    during = _message("during the outage")
    status, _ = await push(http, cluster.a, during)
    assert status != 200, "answered 200 while no node could reach the bot"
    await cluster.redis.start()
    for node in (cluster.a, cluster.b):
        cluster_link = cluster.gateway(node).cluster
        assert cluster_link is not None and await cluster_link.link.wait_up(15)
    # Feishu retries with a new request each time: the first 200 must mean the bot got it, and it must
    # come at once (the nodes re-register their connections when the link is back, not a heartbeat later)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    attempt = 0
    while True:
        payload = _message(f"after the outage {attempt}")
        status, body = await push(http, cluster.a, payload)
        if status == 200:
            got = await bot.event("message")
            assert got["text_head"] == f"after the outage {attempt}", (status, body, got)
            return
        assert loop.time() < deadline, f"no webhook at node A reached the bot on node B: {status} {body}"
        attempt += 1
        await asyncio.sleep(0.1)  # Feishu's pace between attempts, not synchronisation


async def test_the_gateway_and_the_relay_hub_of_a_node_share_one_node_id(start_cluster: Any) -> None:
    cluster = await start_cluster()
    ids = []
    for node in (cluster.a, cluster.b):
        gateway = cluster.gateway(node)
        assert gateway.cluster is not None
        ids.append((gateway.cluster.node_id, node.status()["redis"]["node"]))
    assert all(gw == hub for gw, hub in ids) and ids[0][0] != ids[1][0]
