"""Scale-out (``wslarkbot serve --redis``): three relay nodes sharing one real redis-server.

Nodes A and B run in this process (``run_relay`` on port 0); node C is a ``wslarkbot serve`` subprocess so it
can be SIGKILLed. redis-server is started per test on a free port with no persistence, and killed and
restarted on the same port for the outage test. Real WebSocket clients and HTTP callers; no mocks; every
wait is on a condition (a frame, a log line, the link coming up) with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from redis_server import REDIS_MARKS, Node, redis_server_fixture  # noqa: F401  (registers `redis_server`)
from wslarkbot.relay import RelayConfig, create_app, run_relay
from wslarkbot.relay.app import STATE_KEY
from wslarkbot.relay.redis_hub import RedisHub
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import SIGNED, RedisServer, ServeProcess, recv_json, test_config

pytestmark = [*REDIS_MARKS, pytest.mark.timeout(90)]

CHALLENGE = {"challenge": "c-123", "token": "vt", "type": "url_verification"}
EVENT = {"schema": "2.0", "header": {"event_type": "im.message.receive_v1", "event_id": "e1"}, "event": {}}


@dataclass
class Cluster:
    redis: RedisServer
    a: RunningRelay
    b: RunningRelay
    c: ServeProcess
    http: httpx.AsyncClient


def node_config(redis_url: str, **changes: Any) -> RelayConfig:
    base: dict[str, Any] = {"redis_url": redis_url, "challenge_timeout": 0.9, "ack_timeout": 2.0}
    base.update(changes)
    return test_config(**base)


def hub_of(relay: RunningRelay) -> RedisHub:
    hub = relay.app[STATE_KEY].hub
    assert isinstance(hub, RedisHub)
    return hub


@pytest.fixture
async def cluster(redis_server: RedisServer) -> AsyncIterator[Cluster]:
    url = redis_server.url
    c = await ServeProcess.start(
        "--port", "0", "--redis", url, "--challenge-timeout", "0.9", "--ack-timeout", "2", "--heartbeat", "5"
    )
    try:
        async with (
            run_relay(node_config(url)) as a,
            run_relay(node_config(url)) as b,
            httpx.AsyncClient(timeout=10) as http,
        ):
            yield Cluster(redis_server, a, b, c, http)
    finally:
        await c.stop()


async def subscribe(node: Node, channels: str) -> ClientConnection:
    """A protocol-2 subscriber; returns after the hello (the node's Redis subscription is confirmed)."""
    ws = await connect(node.ws_url(channels))
    hello = await recv_json(ws)
    assert hello["type"] == "hello"
    return ws


def post(http: httpx.AsyncClient, node: Node, path: str, body: Any, **headers: str) -> Any:
    return http.post(f"{node.url}{path}", json=body, headers=headers)


async def test_webhook_at_one_node_reaches_subscribers_on_two_other_nodes(cluster: Cluster) -> None:
    async with await subscribe(cluster.b, "cli_fan") as on_b, await subscribe(cluster.c, "cli_fan") as on_c:
        call = asyncio.ensure_future(post(cluster.http, cluster.a, "/hook/cli_fan", EVENT, **SIGNED))
        env_b, env_c = await recv_json(on_b), await recv_json(on_c)
        assert env_b == env_c
        assert env_b["body"] == EVENT and env_b["headers"]["x-app-id"] == "cli_fan"
        await on_c.send(json.dumps({"type": "ack", "request_id": env_c["headers"]["x-request-id"]}))
        resp = await call
    assert (resp.status_code, resp.json()) == (200, {"msg": "success"})
    status = cluster.a.status()
    assert (status["published"], status["acks"]) == (1, 1)
    # Reports that arrive after the answer are not waited for: the count is a lower bound.
    assert status["delivered"] in (1, 2)
    assert status["redis"]["connected"] is True


async def test_challenge_at_a_is_answered_over_websocket_on_b_within_the_deadline(cluster: Cluster) -> None:
    async with await subscribe(cluster.b, "cli_ch") as ws:
        started = time.monotonic()
        call = asyncio.ensure_future(post(cluster.http, cluster.a, "/hook/cli_ch", CHALLENGE))
        env = await recv_json(ws)
        reply = {
            "type": "reply",
            "request_id": env["headers"]["x-request-id"],
            "body": {"challenge": "c-123"},
        }
        await ws.send(json.dumps(reply))
        resp = await call
    assert (resp.status_code, resp.json()) == (200, {"challenge": "c-123"})
    assert time.monotonic() - started < 0.9


async def test_challenge_at_a_is_answered_by_post_sub_sent_to_c(cluster: Cluster) -> None:
    """The original protocol's reply path: POST /sub/<request_id>, here to a node that holds neither."""
    async with await subscribe(cluster.b, "cli_post") as ws:
        started = time.monotonic()
        call = asyncio.ensure_future(post(cluster.http, cluster.a, "/hook/cli_post", CHALLENGE))
        env = await recv_json(ws)
        rid = env["headers"]["x-request-id"]
        answer = await post(cluster.http, cluster.c, f"/sub/{rid}", {"challenge": "c-123"})
        again = await post(cluster.http, cluster.b, f"/sub/{rid}", {"challenge": "late"})
        resp = await call
    assert (answer.status_code, answer.json()) == (200, {"ok": True})
    # The first answer wins across nodes: 409 while the request still waits, 404 once it was answered.
    assert again.status_code in (404, 409)
    assert (resp.status_code, resp.json()) == (200, {"challenge": "c-123"})
    assert time.monotonic() - started < 0.9


async def test_ack_on_another_node_answers_the_event_and_wrong_channel_is_refused(cluster: Cluster) -> None:
    async with await subscribe(cluster.b, "cli_ack") as ws, await subscribe(cluster.c, "cli_other") as other:
        call = asyncio.ensure_future(post(cluster.http, cluster.a, "/hook/cli_ack", EVENT, **SIGNED))
        rid = (await recv_json(ws))["headers"]["x-request-id"]
        await other.send(json.dumps({"type": "ack", "request_id": rid}))
        refused = await recv_json(other)
        await ws.send(json.dumps({"type": "ack", "request_id": rid}))
        resp = await call
        await ws.send(json.dumps({"type": "ack", "request_id": rid}))
        expired = await recv_json(ws)
    assert refused == {
        "type": "error",
        "request_id": rid,
        "reason": "this connection is not subscribed to the request's channel",
    }
    assert (resp.status_code, resp.json()) == (200, {"msg": "success"})
    # The waiting node forgets the id right after answering (the DEL is not awaited): one of these two.
    assert expired["reason"] in ("unknown or expired request id", "request already answered")


async def test_webhook_with_no_subscriber_on_any_node_is_503_with_retry_after(cluster: Cluster) -> None:
    async with await subscribe(cluster.b, "cli_someone_else"):
        resp = await post(cluster.http, cluster.a, "/hook/cli_nobody", EVENT, **SIGNED)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert resp.json() == {"msg": "no subscriber connected for channel cli_nobody"}


async def test_channel_whose_last_subscriber_left_gets_503_again(cluster: Cluster) -> None:
    ws = await subscribe(cluster.c, "cli_leaving")
    await ws.close()
    await cluster.c.wait_line(r"unsubscribe peer=\S+ channels=cli_leaving ")
    resp = await post(cluster.http, cluster.a, "/hook/cli_leaving", EVENT, **SIGNED)
    assert resp.status_code == 503


async def _next_event_after_failover(
    nodes: list[Node], channel: str, got: asyncio.Queue[dict[str, Any]]
) -> None:
    """A minimal reconnecting bot: on a dropped connection, connect to the next node (as a load balancer
    would send it) and ack every event."""
    for node in nodes:
        try:
            async with await subscribe(node, channel) as ws:
                await got.put({"connected": node.url})
                async for raw in ws:
                    env = json.loads(raw)
                    await ws.send(json.dumps({"type": "ack", "request_id": env["headers"]["x-request-id"]}))
                    await got.put(env)
        except (ConnectionClosed, OSError):
            continue


async def test_killed_node_subscriber_reconnects_to_another_node_and_gets_the_next_event(
    cluster: Cluster,
) -> None:
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    bot = asyncio.ensure_future(_next_event_after_failover([cluster.c, cluster.b], "cli_failover", got))
    try:
        assert (await asyncio.wait_for(got.get(), 5)) == {"connected": cluster.c.url}
        first = await post(cluster.http, cluster.a, "/hook/cli_failover", EVENT, **SIGNED)
        assert first.status_code == 200 and (await asyncio.wait_for(got.get(), 5))["body"] == EVENT

        cluster.c.kill()
        assert (await asyncio.wait_for(got.get(), 10)) == {"connected": cluster.b.url}
        event2 = {**EVENT, "header": {**EVENT["header"], "event_id": "e2"}}
        second = await post(cluster.http, cluster.a, "/hook/cli_failover", event2, **SIGNED)
        assert (second.status_code, second.json()) == (200, {"msg": "success"})
        assert (await asyncio.wait_for(got.get(), 5))["body"] == event2
    finally:
        bot.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bot


async def test_redis_outage_answers_503_quickly_and_nodes_recover_when_it_returns(cluster: Cluster) -> None:
    async with (
        await subscribe(cluster.b, "cli_outage") as on_b,
        await subscribe(cluster.c, "cli_outage") as on_c,
    ):
        await cluster.redis.stop()  # SIGKILL, reaped
        started = time.monotonic()
        during = await post(cluster.http, cluster.a, "/hook/cli_outage", EVENT, **SIGNED)
        assert during.status_code == 503 and during.headers["Retry-After"] == "5"
        assert time.monotonic() - started < 1.5
        await cluster.c.wait_line("redis .* unavailable")
        status = (await cluster.http.get(f"{cluster.a.url}/status")).json()
        assert status["redis"]["connected"] is False
        with pytest.raises(InvalidStatus) as refused:
            await connect(cluster.a.ws_url("cli_outage"))
        assert refused.value.response.status_code == 503

        await cluster.redis.start()
        for relay in (cluster.a, cluster.b):
            assert await hub_of(relay).link.wait_up(15)
        await cluster.c.wait_line("redis .* connection restored")
        # The subscribers stayed connected; their channel was resubscribed on reconnect.
        call = asyncio.ensure_future(post(cluster.http, cluster.a, "/hook/cli_outage", EVENT, **SIGNED))
        env_b, env_c = await recv_json(on_b), await recv_json(on_c)
        await on_b.send(json.dumps({"type": "ack", "request_id": env_b["headers"]["x-request-id"]}))
        after = await call
    assert env_b == env_c
    assert (after.status_code, after.json()) == (200, {"msg": "success"})


async def test_node_started_before_redis_answers_503_then_serves_once_redis_is_up(
    tmp_path: pathlib.Path,
) -> None:
    redis = RedisServer(tmp_path)  # port chosen, server not started yet
    config = node_config(redis.url)
    hub = RedisHub(
        redis.url,
        max_subscribers_per_channel=config.max_subscribers_per_channel,
        max_pending_replies=config.max_pending_replies,
        pending_ttl=10,
        start_wait=0.2,
    )
    try:
        async with run_relay(config, app=create_app(config, hub=hub)) as relay, httpx.AsyncClient() as http:
            early = await post(http, relay, "/hook/cli_cold", EVENT, **SIGNED)
            assert early.status_code == 503 and early.headers["Retry-After"] == "5"
            with pytest.raises(InvalidStatus):
                await connect(relay.ws_url("cli_cold"))

            await redis.start()
            assert await hub.link.wait_up(15)
            async with await subscribe(relay, "cli_cold") as ws:
                call = asyncio.ensure_future(post(http, relay, "/hook/cli_cold", EVENT, **SIGNED))
                env = await recv_json(ws)
                await ws.send(json.dumps({"type": "ack", "request_id": env["headers"]["x-request-id"]}))
                assert (await call).status_code == 200
    finally:
        await redis.stop()
