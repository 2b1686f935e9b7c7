"""Replay after reconnect (``replay = true``): events wait in the relay for the next lark-oapi connection.

The stores are checked on their own (in memory and in a real redis-server, same expectations); the behaviour
end to end with the official lark-oapi client in subprocesses, Feishu played by signed, encrypted POSTs
(helpers from test_longconn_sdk.py).
"""

from __future__ import annotations

import json
import pathlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from system_programs import require
from test_longconn_sdk import (  # noqa: F401  (the `bots` and `http` fixtures)
    APP_ID,
    ENCRYPT_KEY,
    WAIT,
    Relay,
    _config,
    _message,
    _sample,
    bots_fixture,
    http_fixture,
    push,
    start_relay,
)
from wslarkbot.crypto import encrypt, event_signature
from wslarkbot.exceptions import ConfigurationError
from wslarkbot.relay.longconn import Gateway, GatewayConfig
from wslarkbot.relay.longconn.replay import Entry, MemoryReplay, ReplayStore
from wslarkbot.relay.testing import RedisServer

pytestmark = pytest.mark.timeout(150)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


# --- the stores ------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def store(request: Any, tmp_path: pathlib.Path) -> AsyncIterator[tuple[ReplayStore, FakeClock]]:
    clock = FakeClock()
    if request.param == "memory":
        yield MemoryReplay(clock), clock
        return
    require("redis-server")
    import redis.asyncio as aioredis

    from wslarkbot.relay.longconn.redis_replay import RedisReplay

    server = await RedisServer(tmp_path).start()
    client = aioredis.Redis.from_url(server.url)
    try:
        yield RedisReplay(lambda call: call(client), client, clock), clock
    finally:
        await client.aclose()
        await server.stop()


def _entry(n: int, at: float) -> Entry:
    return Entry(f"e{n}", f'{{"n":{n}}}'.encode(), f"t{n}", at)


async def test_store_size_lease_release_done_and_ttl(store: tuple[ReplayStore, FakeClock]) -> None:
    replay, clock = store
    put = {"size": 2, "ttl": 100.0, "lease": 10.0}
    assert await replay.put("app", _entry(1, clock.now), **put)
    assert await replay.put("app", _entry(2, clock.now), **put)
    assert not await replay.put("app", _entry(3, clock.now), **put)  # full: never a silent drop
    claim = {"limit": 10, "ttl": 100.0, "lease": 10.0}
    assert await replay.claim("app", **claim) == []  # both leased to the webhook's courier
    await replay.release("app", "e1")  # its connection died
    [got] = await replay.claim("app", **claim)
    assert (got.id, got.payload, got.trace_id) == ("e1", b'{"n":1}', "t1")
    assert await replay.claim("app", **claim) == []  # e1 leased again
    clock.now += 5
    await replay.renew("app", ["e2"], 10.0)
    clock.now += 6  # e1's lease lapsed (its node died), e2's was renewed
    assert [e.id for e in await replay.claim("app", **claim)] == ["e1"]
    await replay.done("app", "e1")
    assert await replay.count("app") == 1
    clock.now += 100  # e2 is older than the TTL
    assert await replay.claim("app", **claim) == []
    assert await replay.count("app") == 0
    assert await replay.put("app", _entry(4, clock.now), **put)
    assert await replay.count("other") == 0


def test_redis_needs_a_ticket_secret() -> None:
    with pytest.raises(ConfigurationError, match="ticket_secret"):
        Gateway(GatewayConfig(), redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="16"):
        GatewayConfig(ticket_secret="short")


# --- end to end ------------------------------------------------------------------------------------


@pytest.fixture
async def replay_relay() -> AsyncIterator[Relay]:
    server = await start_relay(_config(replay=True, replay_size=3, event_timeout=1.0))
    yield server
    await server.runner.cleanup()


async def push_raw(
    http: aiohttp.ClientSession, relay: Relay, payload: dict[str, Any]
) -> aiohttp.ClientResponse:
    body = json.dumps({"encrypt": encrypt(json.dumps(payload), ENCRYPT_KEY)}).encode()
    ts, nonce = str(int(time.time())), uuid.uuid4().hex
    headers = {
        "X-Lark-Request-Timestamp": ts,
        "X-Lark-Request-Nonce": nonce,
        "X-Lark-Signature": event_signature(ts, nonce, ENCRYPT_KEY, body),
    }
    async with http.post(f"{relay.url}/hook/{APP_ID}", data=body, headers=headers) as resp:
        await resp.read()
        return resp


async def test_event_sent_while_no_bot_is_connected_reaches_the_bot_started_later(
    replay_relay: Relay, bots: Any, http: Any
) -> None:
    payload = _message("while you were away")
    assert await push(http, replay_relay, payload) == (200, {"msg": "success"})
    assert await replay_relay.gateway.replayer.buffered(APP_ID) == 1
    bot = await bots(replay_relay.url)
    got = await bot.event("message")
    assert (got["message_id"], got["text_head"]) == (
        payload["event"]["message"]["message_id"],
        "while you were away",
    )
    await replay_relay.gateway.replayer.wait_empty(APP_ID, WAIT)  # answered {"code":200}: removed


async def test_event_in_flight_on_a_killed_bot_is_redelivered_to_the_next_connection(
    replay_relay: Relay, bots: Any, http: Any
) -> None:
    hub = replay_relay.gateway.clients
    stuck = await bots(replay_relay.url, block=True)
    await hub.wait_for_connections(APP_ID, 1, WAIT)
    payload = _message("do not lose me")
    # The bot takes it and never answers: after event_timeout Feishu is told 200, the relay keeps the event.
    assert await push(http, replay_relay, payload) == (200, {"msg": "success"})
    assert (await stuck.event("message"))["text_head"] == "do not lose me"
    stuck.proc.kill()  # SIGKILL before answering
    await hub.wait_for_connections(APP_ID, 0, WAIT)
    assert await replay_relay.gateway.replayer.buffered(APP_ID) == 1
    fresh = await bots(replay_relay.url)
    got = await fresh.event("message")
    assert got["message_id"] == payload["event"]["message"]["message_id"]
    await replay_relay.gateway.replayer.wait_empty(APP_ID, WAIT)


async def test_full_buffer_answers_503_and_keeps_what_it_accepted(
    replay_relay: Relay, bots: Any, http: Any
) -> None:
    accepted = [_message(f"kept {n}") for n in range(3)]
    for payload in accepted:
        assert await push(http, replay_relay, payload) == (200, {"msg": "success"})
    refused = await push_raw(http, replay_relay, _message("one too many"))
    assert (refused.status, refused.headers["Retry-After"]) == (503, "5")  # Feishu retries it later
    bot = await bots(replay_relay.url)
    seen = set()
    for _ in accepted:
        line = await bot.wait_line(
            lambda s: s.startswith("BOT ") and json.loads(s[4:])["text_head"] not in seen
        )
        seen.add(json.loads(line[4:])["text_head"])
    assert seen == {"kept 0", "kept 1", "kept 2"}
    await replay_relay.gateway.replayer.wait_empty(APP_ID, WAIT)
    assert await push(http, replay_relay, _message("room again")) == (200, {"msg": "success"})


async def test_card_callbacks_are_never_buffered(replay_relay: Relay, http: Any) -> None:
    refused = await push_raw(http, replay_relay, _sample("card.action.trigger.json"))
    assert refused.status == 503  # Feishu needs the card's answer within 3 s
    assert await replay_relay.gateway.replayer.buffered(APP_ID) == 0


async def test_a_live_bot_answers_through_the_buffer_like_without_replay(
    replay_relay: Relay, bots: Any, http: Any
) -> None:
    bot = await bots(replay_relay.url)
    await replay_relay.gateway.clients.wait_for_connections(APP_ID, 1, WAIT)
    assert await push(http, replay_relay, _message("live")) == (200, {"msg": "success"})
    assert (await bot.event("message"))["text_head"] == "live"
    assert await replay_relay.gateway.replayer.buffered(APP_ID) == 0  # removed before Feishu got its 200
    status, body = await push(http, replay_relay, _sample("card.action.trigger.json"))
    assert status == 200 and body["toast"]["content"] == "clicked!"
