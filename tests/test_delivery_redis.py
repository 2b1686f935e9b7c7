"""Buffers, resume and groups across relay nodes sharing one real redis-server (``--redis``, ``--buffer``).

Nodes A and B run in this process; node C is a ``wslarkbot serve`` subprocess so it can be SIGKILLed.
Real sockets, no mocks; "nothing more arrived" is a ``PING`` answered by the very next frame ``PONG``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from delivery_helpers import ack, assert_nothing_more, event
from redis_server import REDIS_MARKS, Node, redis_server_fixture  # noqa: F401  (registers `redis_server`)
from wslarkbot.relay import run_relay
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import SIGNED, RedisServer, ServeProcess, recv_json, test_config

pytestmark = [*REDIS_MARKS, pytest.mark.timeout(90)]


@dataclass
class Cluster:
    a: RunningRelay
    b: RunningRelay
    c: ServeProcess
    http: httpx.AsyncClient


@pytest.fixture
async def cluster(redis_server: RedisServer) -> AsyncIterator[Cluster]:
    c = await ServeProcess.start(
        "--port",
        "0",
        "--redis",
        redis_server.url,
        "--buffer",
        "cli_*",
        "--ack-timeout",
        "2",
        "--shutdown-timeout",
        "0.5",
    )
    config = test_config(redis_url=redis_server.url, buffer="cli_*", ack_timeout=2.0)
    try:
        async with run_relay(config) as a, run_relay(config) as b, httpx.AsyncClient(timeout=10) as http:
            yield Cluster(a, b, c, http)
    finally:
        await c.stop()


def post(cluster: Cluster, node: Node, channel: str, n: int) -> Any:
    return cluster.http.post(f"{node.url}/hook/{channel}", json=event(n), headers=SIGNED)


async def subscribe(node: Node, channels: str, **query: str) -> ClientConnection:
    ws = await connect(node.ws_url(channels) + "".join(f"&{k}={v}" for k, v in query.items()))
    assert (await recv_json(ws))["type"] == "hello"
    return ws


async def first_of(*sockets: ClientConnection) -> tuple[ClientConnection, dict[str, Any]]:
    tasks = {asyncio.ensure_future(recv_json(ws)): ws for ws in sockets}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    winner = done.pop()
    return tasks[winner], winner.result()


async def test_buffered_event_survives_the_death_of_the_node_that_accepted_it(cluster: Cluster) -> None:
    resp = await post(cluster, cluster.c, "cli_dur", 1)
    assert (resp.status_code, resp.json()) == (200, {"msg": "buffered"})
    cluster.c.kill()
    async with await subscribe(cluster.a, "cli_dur") as ws:
        env = await recv_json(ws)
        assert env["replay"] is True and env["body"] == event(1) and env["channel"] == "cli_dur"
        await ack(ws, env)
        await assert_nothing_more(ws)
    async with await subscribe(cluster.b, "cli_dur") as other:
        await assert_nothing_more(other)  # acked on A: not replayed on B


async def test_resume_with_since_on_another_node_gets_exactly_the_missed_events(cluster: Cluster) -> None:
    async with await subscribe(cluster.a, "cli_res") as ws:
        call = asyncio.ensure_future(post(cluster, cluster.b, "cli_res", 1))
        seen = await recv_json(ws)
        await ack(ws, seen)
        assert (await call).json() == {"msg": "success"}
    for n in (2, 3):
        assert (await post(cluster, cluster.a, "cli_res", n)).json() == {"msg": "buffered"}
    async with await subscribe(cluster.b, "cli_res", since=f"cli_res:{seen['id']}") as ws:
        replayed = [await recv_json(ws), await recv_json(ws)]
        assert [e["body"]["event"]["n"] for e in replayed] == [2, 3] and all(e["replay"] for e in replayed)
        await assert_nothing_more(ws)
        call = asyncio.ensure_future(post(cluster, cluster.a, "cli_res", 4))
        live = await recv_json(ws)
        assert live["body"]["event"]["n"] == 4 and "replay" not in live and live["id"] > replayed[1]["id"]
        await ack(ws, live)
        assert (await call).json() == {"msg": "success"}


async def test_group_members_on_two_nodes_each_get_distinct_events_and_broadcast_gets_all(
    cluster: Cluster,
) -> None:
    got: dict[str, list[str]] = {"m1": [], "m2": [], "b": []}
    all_seen = asyncio.Event()
    async with (
        await subscribe(cluster.a, "app_grp", group="workers") as m1,
        await subscribe(cluster.b, "app_grp", group="workers") as m2,
        await subscribe(cluster.a, "app_grp") as b,
    ):

        async def read(name: str, ws: ClientConnection, acks: bool) -> None:
            async for frame in ws:
                env = json.loads(frame)
                if "headers" in env:
                    got[name].append(env["headers"]["x-request-id"])
                    if acks:
                        await ack(ws, env)
                    if len(got["b"]) == 10:
                        all_seen.set()

        readers = [
            asyncio.ensure_future(read("m1", m1, True)),
            asyncio.ensure_future(read("m2", m2, True)),
            asyncio.ensure_future(read("b", b, False)),
        ]
        for n in range(10):
            node = cluster.a if n % 2 else cluster.b
            resp = await post(cluster, node, "app_grp", n)
            assert (resp.status_code, resp.json()) == (200, {"msg": "success"})
        await asyncio.wait_for(all_seen.wait(), 5)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    assert len(got["b"]) == 10
    assert not set(got["m1"]) & set(got["m2"])
    assert sorted(got["m1"] + got["m2"]) == sorted(got["b"])


async def test_group_member_closed_before_acking_hands_over_to_a_member_on_another_node(
    cluster: Cluster,
) -> None:
    m1 = await subscribe(cluster.a, "app_hand", group="workers")
    m2 = await subscribe(cluster.b, "app_hand", group="workers")
    async with m1, m2:
        call = asyncio.ensure_future(post(cluster, cluster.a, "app_hand", 1))
        holder, env = await first_of(m1, m2)
        other = m2 if holder is m1 else m1
        await holder.close()
        again = await recv_json(other)
        assert again["headers"]["x-request-id"] == env["headers"]["x-request-id"]
        await ack(other, again)
        resp = await call
    assert (resp.status_code, resp.json()) == (200, {"msg": "success"})


async def test_group_members_on_two_nodes_replay_the_unacked_buffer_once(cluster: Cluster) -> None:
    for n in (1, 2):
        assert (await post(cluster, cluster.b, "cli_gbuf", n)).json() == {"msg": "buffered"}
    m1 = await subscribe(cluster.a, "cli_gbuf", group="workers")
    replayed = [await recv_json(m1), await recv_json(m1)]
    async with await subscribe(cluster.b, "cli_gbuf", group="workers") as m2:
        await assert_nothing_more(m2)  # m1 (on A) is replaying both
        await m1.close()  # without acking: A has no other member, B's member takes them over
        taken = [await recv_json(m2), await recv_json(m2)]
        assert sorted(e["id"] for e in taken) == sorted(e["id"] for e in replayed)
        for env in taken:
            await ack(m2, env)
        await assert_nothing_more(m2)
    async with await subscribe(cluster.a, "cli_gbuf", group="workers") as m3:
        await assert_nothing_more(m3)


async def test_graceful_stop_of_a_node_answers_its_waiting_buffered_event_200_and_another_replays_it(
    cluster: Cluster,
) -> None:
    async with await subscribe(cluster.c, "cli_stop") as ws:
        call = asyncio.ensure_future(post(cluster, cluster.c, "cli_stop", 1))
        first = await recv_json(ws)
        assert await cluster.c.stop() == 0  # SIGINT while the event waits for its ack
        resp = await call
    assert (resp.status_code, resp.json()) == (200, {"msg": "buffered"})
    await cluster.c.wait_line("outcome=buffered-shutdown")
    async with await subscribe(cluster.a, "cli_stop") as other:
        env = await recv_json(other)
        assert env["replay"] and env["id"] == first["id"]
