"""End to end delivery: Feishu (simulator) -> relay (in-memory, buffering ``cli_*``) -> AsyncClient -> Bot.

Resume after a client restart (``since``, with the bot's deduplication), competing consumers (``group=``)
and the hand-over of an event whose member's connection dropped mid-handler. Real sockets, no mocks,
no sleeps.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from wslarkbot.bot import Bot
from wslarkbot.client import AsyncClient
from wslarkbot.events import MessageEvent
from wslarkbot.relay.app import STATE_KEY
from wslarkbot.relay.runner import RunningRelay, run_relay
from wslarkbot.relay.testing import test_config
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.feishu import FeishuSimulator

pytestmark = pytest.mark.timeout(60)
WAIT = 5.0


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    async with run_relay(test_config(buffer="cli_*", ack_timeout=2.0)) as r:
        yield r


@pytest.fixture
async def bots() -> AsyncIterator[list[Bot]]:
    made: list[Bot] = []
    yield made
    for bot in made:
        await bot.aclose()


class Handled:
    """Texts handled, thread-safe (``def`` handlers run in the client's threads)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.cond = threading.Condition()

    def add(self, text: str) -> None:
        with self.cond:
            self.texts.append(text)
            self.cond.notify_all()

    async def wait_for(self, count: int) -> list[str]:
        def wait() -> bool:
            with self.cond:
                return self.cond.wait_for(lambda: len(self.texts) >= count, WAIT)

        assert await asyncio.to_thread(wait), self.texts
        return self.texts


def make_bot(bots: list[Bot], app: SimApp, **options: Any) -> Bot:
    bot = Bot(app.app_id, app.app_secret, app.verification_token, app.encrypt_key, **options)
    bots.append(bot)
    return bot


async def until(client: AsyncClient, predicate: Callable[[Any], bool]) -> None:
    assert await asyncio.to_thread(client.status.wait_for, predicate, WAIT), client.status


def simulator(app: SimApp, relay: RunningRelay) -> FeishuSimulator:
    return FeishuSimulator(app, event_url=f"{relay.url}/hook/{app.app_id}", time_scale=1e-5)


def answer(result: Any) -> Any:
    return json.loads(result.attempts[-1].response_body)


async def test_client_restarted_resumes_with_since_and_handles_each_event_once(
    relay: RunningRelay, bots: list[Bot]
) -> None:
    app = SimApp.random()
    bot = make_bot(bots, app, dedup=True)
    handled = Handled()
    bot.on_text(lambda event: handled.add(event.text or ""))
    client = AsyncClient(bot, server=f"127.0.0.1:{relay.port}")
    async with simulator(app, relay) as sim:
        async with client:
            await until(client, lambda s: s.connected and s.hellos >= 1)
            first = await sim.send_text_message("one")
            assert first.delivered and answer(first) == {"msg": "success"}
            first_id = client.cursor.last(app.app_id)
        for text in ("two", "three"):  # the bot is down: kept by the relay, Feishu gets 200
            result = await sim.send_text_message(text)
            assert result.delivered and result.retries == 0 and answer(result) == {"msg": "buffered"}
        async with client:  # the same instance reconnects with ?since=<channel>:<last id>
            assert await handled.wait_for(3) == ["one", "two", "three"]
            await until(client, lambda s: s.acks >= 3)
            assert [sub.since for sub in relay.app[STATE_KEY].connections] == [{app.app_id: first_id}]
    assert relay.status()["buffered_unacked"] == 0  # acked over the new connection: not replayed again


async def test_group_clients_share_the_events_and_each_is_handled_once(
    relay: RunningRelay, bots: list[Bot]
) -> None:
    app = SimApp.random()
    handled = [Handled(), Handled()]
    clients = []
    for h in handled:
        bot = make_bot(bots, app)
        bot.on_text(lambda event, h=h: h.add(event.text or ""))
        clients.append(AsyncClient(bot, server=f"127.0.0.1:{relay.port}", group="workers"))
    async with clients[0], clients[1], simulator(app, relay) as sim:
        for c in clients:
            await until(c, lambda s: s.connected and s.hellos >= 1)
        for n in range(6):
            result = await sim.send_text_message(f"m{n}")
            assert result.delivered and result.retries == 0
    texts = handled[0].texts + handled[1].texts
    assert sorted(texts) == [f"m{n}" for n in range(6)]
    assert len(handled[0].texts) == len(handled[1].texts) == 3


async def test_member_whose_connection_drops_mid_handler_hands_the_event_over_at_once(
    relay: RunningRelay, bots: list[Bot]
) -> None:
    """The connection of the member handling an event drops before it acks: the relay hands the event to
    the other member at once, which handles and acks it, so Feishu gets its 200 at the first attempt. The
    first member's handler still runs to its end: at least once (docs/delivery.md, "Groups in detail",
    for what a shared deduplicator changes)."""
    app = SimApp.random()
    runs: list[str] = []
    started, release = threading.Event(), threading.Event()
    first_bot, second_bot = make_bot(bots, app), make_bot(bots, app)

    @first_bot.on_text
    def slow(event: MessageEvent) -> None:
        runs.append("first")
        started.set()
        release.wait(WAIT)

    second_bot.on_text(lambda event: runs.append("second"))
    server = f"127.0.0.1:{relay.port}"
    first = AsyncClient(first_bot, server=server, group="workers", ack_after=10.0)
    second = AsyncClient(second_bot, server=server, group="workers")
    try:
        async with simulator(app, relay) as sim, first:
            await until(first, lambda s: s.connected and s.hellos >= 1)
            delivery = sim.deliver_async(sim_payload(sim))
            assert await asyncio.to_thread(started.wait, WAIT)
            async with second:
                await until(second, lambda s: s.connected and s.hellos >= 1)
                state = relay.app[STATE_KEY]
                holder = min(state.connections, key=lambda s: s.id)  # the first member's connection
                await state.connections[holder].close(code=1012, message=b"dropped by the test")
                result = await delivery
                await until(second, lambda s: s.acks >= 1)
                release.set()
            assert result.delivered and result.retries == 0
    finally:
        release.set()
    assert sorted(runs) == ["first", "second"]


def sim_payload(sim: FeishuSimulator) -> dict[str, Any]:
    from wslarkbot.sim import payloads

    return payloads.text_message(sim.app, "hand me over")
