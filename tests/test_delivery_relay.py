"""Buffering, resume and competing consumers on one relay process (in-memory hub), over real sockets.

Real relay on port 0, real WebSocket subscribers and HTTP callers playing Feishu; no mocks. "Nothing more
arrived" is checked by sending ``PING`` and getting ``PONG`` as the very next frame, never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from delivery_helpers import ack, assert_nothing_more, event
from wslarkbot.relay import run_relay
from wslarkbot.relay.runner import RunningRelay, start_relay
from wslarkbot.relay.testing import SIGNED, recv_json, test_config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    config = test_config(buffer="cli_*", buffer_size=3, ack_timeout=1.0)
    async with run_relay(config) as r:
        yield r


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def post(http: httpx.AsyncClient, relay: RunningRelay, channel: str, n: int) -> Any:
    return http.post(f"{relay.url}/hook/{channel}", json=event(n), headers=SIGNED)


async def subscribe(relay: RunningRelay, channels: str, **query: str) -> ClientConnection:
    """A protocol-2 subscriber (``group=``, ``since=``); returns after the hello."""
    url = relay.ws_url(channels) + "".join(f"&{k}={v}" for k, v in query.items())
    ws = await connect(url)
    hello = await recv_json(ws)
    assert hello["type"] == "hello"
    if "group" in query:
        assert hello["group"] == query["group"]
    return ws


async def test_buffered_event_with_nobody_connected_is_200_buffered_then_replayed_on_connect(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    resp = await post(http, relay, "cli_buf", 1)
    assert (resp.status_code, resp.json()) == (200, {"msg": "buffered"})
    async with await subscribe(relay, "cli_buf") as ws:
        env = await recv_json(ws)
        assert env["replay"] is True and env["channel"] == "cli_buf" and env["body"] == event(1)
        assert env["id"].count("-") == 1
        await ack(ws, env)
        await assert_nothing_more(ws)  # the ack of a replayed event is accepted: no error frame
    async with await subscribe(relay, "cli_buf") as again:
        await assert_nothing_more(again)  # acked: not replayed to the next subscriber
    status = relay.status()
    assert (status["buffered"], status["undelivered"], status["buffered_unacked"]) == (1, 0, 0)


async def test_unbuffered_channel_still_answers_503_and_live_envelopes_carry_id_and_channel(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    resp = await post(http, relay, "app_plain", 1)
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    async with await subscribe(relay, "app_plain") as ws:
        call = asyncio.ensure_future(post(http, relay, "app_plain", 2))
        env = await recv_json(ws)
        assert env["channel"] == "app_plain" and "replay" not in env and env["id"]
        await ack(ws, env)
        resp = await call
    assert (resp.status_code, resp.json()) == (200, {"msg": "success"})


async def test_resume_with_since_gets_exactly_the_missed_events_in_order_and_nothing_twice(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_res") as first:
        call = asyncio.ensure_future(post(http, relay, "cli_res", 1))
        seen = await recv_json(first)
        await ack(first, seen)
        assert (await call).json() == {"msg": "success"}
    for n in (2, 3):
        assert (await post(http, relay, "cli_res", n)).json() == {"msg": "buffered"}
    async with await subscribe(relay, "cli_res", since=f"cli_res:{seen['id']}") as ws:
        replayed = [await recv_json(ws), await recv_json(ws)]
        assert [e["body"]["event"]["n"] for e in replayed] == [2, 3]
        assert all(e["replay"] for e in replayed) and replayed[0]["id"] < replayed[1]["id"]
        await assert_nothing_more(ws)
        call = asyncio.ensure_future(post(http, relay, "cli_res", 4))
        live = await recv_json(ws)
        assert live["body"]["event"]["n"] == 4 and "replay" not in live
        await ack(ws, live)
        assert (await call).json() == {"msg": "success"}


async def test_event_left_unacked_by_a_connected_subscriber_is_200_buffered_and_replayed_later(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_slow") as ws:
        call = asyncio.ensure_future(post(http, relay, "cli_slow", 1))
        first = await recv_json(ws)
        resp = await call  # no ack within ack_timeout: kept, so not a 504 that Feishu would retry
    assert (resp.status_code, resp.json()) == (200, {"msg": "buffered"})
    async with await subscribe(relay, "cli_slow") as ws:
        env = await recv_json(ws)
        assert env["replay"] and env["id"] == first["id"]


async def test_full_buffer_of_unacked_events_answers_503_until_one_is_acked(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    for n in (1, 2, 3):
        assert (await post(http, relay, "cli_full", n)).json() == {"msg": "buffered"}
    refused = await post(http, relay, "cli_full", 4)
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    assert "unacked" in refused.json()["msg"]
    async with await subscribe(relay, "cli_full") as ws:
        oldest = await recv_json(ws)
        await ack(ws, oldest)
        for _ in (2, 3):
            await recv_json(ws)
        await assert_nothing_more(ws)  # the ack is processed before the next webhook
        call = asyncio.ensure_future(post(http, relay, "cli_full", 4))
        env = await recv_json(ws)
        assert env["body"]["event"]["n"] == 4
        await ack(ws, env)
        assert (await call).json() == {"msg": "success"}


class Reader:
    """Reads envelopes from one subscriber in the background; acks them unless ``acks`` is False."""

    def __init__(self, ws: ClientConnection, *, acks: bool = True) -> None:
        self.ws = ws
        self.acks = acks
        self.envelopes: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for frame in self.ws:
            env = json.loads(frame)
            if "headers" not in env:
                continue
            if self.acks:
                await ack(self.ws, env)
            async with self.changed:
                self.envelopes.append(env)
                self.changed.notify_all()

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.envelopes) >= count), timeout)

    def ids(self) -> list[str]:
        return [e["headers"]["x-request-id"] for e in self.envelopes]


async def test_group_gives_each_event_to_exactly_one_member_and_broadcast_gets_all(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with (
        await subscribe(relay, "app_grp", group="workers") as m1,
        await subscribe(relay, "app_grp", group="workers") as m2,
        await subscribe(relay, "app_grp") as b,
    ):
        r1, r2, rb = Reader(m1), Reader(m2), Reader(b, acks=False)
        for n in range(10):
            resp = await post(http, relay, "app_grp", n)
            assert (resp.status_code, resp.json()) == (200, {"msg": "success"})
        await rb.wait_for(10)
        assert not set(r1.ids()) & set(r2.ids())
        assert sorted(r1.ids() + r2.ids()) == sorted(rb.ids())
        assert (len(r1.envelopes), len(r2.envelopes)) == (5, 5)  # round-robin among idle members


async def first_of(*sockets: ClientConnection) -> tuple[ClientConnection, dict[str, Any]]:
    """The socket that receives an envelope first, and the envelope."""
    tasks = {asyncio.ensure_future(recv_json(ws)): ws for ws in sockets}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    winner = done.pop()
    return tasks[winner], winner.result()


async def test_group_member_closed_before_acking_hands_the_event_to_another_member(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    m1 = await subscribe(relay, "app_hand", group="workers")
    m2 = await subscribe(relay, "app_hand", group="workers")
    async with m1, m2:
        call = asyncio.ensure_future(post(http, relay, "app_hand", 1))
        holder, env = await first_of(m1, m2)
        other = m2 if holder is m1 else m1
        await holder.close()  # dies without acking
        again = await recv_json(other)
        assert again["headers"]["x-request-id"] == env["headers"]["x-request-id"]
        await ack(other, again)
        resp = await call
    assert (resp.status_code, resp.json()) == (200, {"msg": "success"})


async def test_group_with_no_member_left_to_take_over_answers_504_so_feishu_retries(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    ws = await subscribe(relay, "app_alone", group="workers")
    call = asyncio.ensure_future(post(http, relay, "app_alone", 1))
    await recv_json(ws)
    await ws.close()
    resp = await call
    assert resp.status_code == 504


async def test_group_members_share_the_unacked_buffer_without_replaying_an_event_twice(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    for n in (1, 2):
        assert (await post(http, relay, "cli_gbuf", n)).json() == {"msg": "buffered"}
    m1 = await subscribe(relay, "cli_gbuf", group="workers")
    replayed = [await recv_json(m1), await recv_json(m1)]
    async with await subscribe(relay, "cli_gbuf", group="workers") as m2:
        await assert_nothing_more(m2)  # both are being handled by m1
        await m1.close()  # ... which dies without acking: m2 takes them over
        taken = [await recv_json(m2), await recv_json(m2)]
        assert [e["id"] for e in taken] == [e["id"] for e in replayed]
        assert all(e["replay"] for e in taken)
        for env in taken:
            await ack(m2, env)
        await assert_nothing_more(m2)
    async with await subscribe(relay, "cli_gbuf", group="workers") as m3:
        await assert_nothing_more(m3)


async def test_bad_group_or_since_is_refused_with_400(relay: RunningRelay, http: httpx.AsyncClient) -> None:
    for query in ("group=a%20b", "since=cli_other:1-0", "since=cli_a:nope"):
        resp = await http.get(f"{relay.url}/sub/cli_a?proto=2&{query}")
        assert resp.status_code == 400, query


async def test_graceful_stop_answers_a_waiting_buffered_event_503_and_logs_the_unacked_loss(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """In memory the buffer dies with the process: the waiting event is answered 503 (Feishu retries),
    not "buffered", and the stop says how many kept events nobody acked are lost."""
    relay = await start_relay(test_config(buffer="cli_*", ack_timeout=5.0))
    try:
        assert (await post(http, relay, "cli_stop", 1)).json() == {"msg": "buffered"}
        async with await subscribe(relay, "cli_stop") as ws:
            await recv_json(ws)  # the replay, not acked
            pending = asyncio.ensure_future(post(http, relay, "cli_stop", 2))
            await recv_json(ws)
            await relay.stop()
            resp = await pending
    finally:
        await relay.stop()
    assert resp.status_code == 503 and resp.json() == {"msg": "relay is shutting down"}
    assert "2 buffered events nobody acked are lost" in caplog.text


async def test_ack_naming_its_message_over_a_later_connection_marks_the_buffered_event_acked(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_late") as first:
        call = asyncio.ensure_future(post(http, relay, "cli_late", 1))
        env = await recv_json(first)
        assert (await call).json() == {"msg": "buffered"}  # not acked in time
    async with await subscribe(relay, "cli_late", since=f"cli_late:{env['id']}") as second:
        # The handler finished after the reconnect: its ack names the message it is for.
        late = {"type": "ack", "request_id": env["headers"]["x-request-id"], "channel": "cli_late"}
        await second.send(json.dumps({**late, "id": env["id"]}))
        await assert_nothing_more(second)  # accepted: no error frame
    async with await subscribe(relay, "cli_late") as third:
        await assert_nothing_more(third)  # acked: not replayed
