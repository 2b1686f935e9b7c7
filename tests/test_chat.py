"""Chat-bot policies of Bot: per-chat ordering, stale-message dropping, deduplication.

The async path runs over real HTTP (the webhook adapter, pushed to by the Feishu simulator); the sync path
runs ``process_message`` from several threads with envelopes signed as Feishu signs them. Every "has it
happened yet" question is answered with events, never with sleeps: the ordering key function (called
before a message waits for its chat) reports each arrival.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from fake_clock import Clock
from wslarkbot.bot import Bot
from wslarkbot.chat import chat_key
from wslarkbot.events import FeishuEvent, MessageEvent
from wslarkbot.exceptions import ConfigurationError
from wslarkbot.sim import FeishuSimulator, SimApp, payloads
from wslarkbot.sim.protocol import build_request
from wslarkbot.webhook import create_webhook_app

WAIT = 5.0
Serve = Callable[[Bot], Awaitable[str]]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(bot) -> url`` of the bot's webhook on 127.0.0.1:0."""
    runners: list[web.AppRunner] = []

    async def start(bot: Bot) -> str:
        runner = web.AppRunner(create_webhook_app(bot, path="/webhook"), shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"

    yield start
    for runner in runners:
        await runner.cleanup()


def app_bot(app: SimApp, **kwargs: Any) -> Bot:
    return Bot(app.app_id, verification_token=app.verification_token, encrypt_key=app.encrypt_key, **kwargs)


def text_of(event: MessageEvent) -> str:
    return event.text or ""


class Arrivals:
    """An ordering key function that records which messages reached the bot (before they queue)."""

    def __init__(self, key_fn: Callable[[FeishuEvent], Hashable | None] = chat_key) -> None:
        self.key_fn = key_fn
        self.seen: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, event: FeishuEvent) -> Hashable | None:
        with self._cond:
            if isinstance(event, MessageEvent):
                self.seen.append(text_of(event))
            self._cond.notify_all()
        return self.key_fn(event)

    def wait(self, text: str) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: text in self.seen, WAIT), f"{text} never arrived"

    async def await_(self, text: str) -> None:
        await asyncio.to_thread(self.wait, text)


class Gates:
    """Per-message gates an async handler waits on, and the log of starts and ends."""

    def __init__(self, *closed: str) -> None:
        self.log: list[str] = []
        self.events: dict[str, asyncio.Event] = {}
        self.gates = {text: asyncio.Event() for text in closed}

    def event(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())

    async def handler(self, event: MessageEvent) -> None:
        text = text_of(event)
        self.log.append(f"start {text}")
        self.event(f"start {text}").set()
        if text in self.gates:
            await self.gates[text].wait()
        self.log.append(f"end {text}")
        self.event(f"end {text}").set()

    async def reached(self, name: str) -> None:
        await asyncio.wait_for(self.event(name).wait(), WAIT)


# -- ordering, async path (webhook + simulator) -----------------------------------------------------------


async def test_one_chat_is_handled_in_arrival_order_while_other_chats_proceed(
    sim_app: SimApp, serve: Serve, feishu_sim_factory: Callable[..., FeishuSimulator]
) -> None:
    arrivals = Arrivals()
    bot = app_bot(sim_app, ordering=arrivals)
    gates = Gates("a1")
    bot.on_text(gates.handler)
    sim = feishu_sim_factory(await serve(bot))

    def push(text: str, chat: str) -> asyncio.Task[Any]:
        return sim.deliver_async(payloads.text_message(sim_app, text, chat_id=chat))

    push("a1", "oc_a")
    await gates.reached("start a1")
    for text in ("a2", "a3"):
        push(text, "oc_a")
        await arrivals.await_(text)  # queued behind a1 from here on
    b1 = push("b1", "oc_b")
    assert (await b1).delivered
    assert gates.log == ["start a1", "start b1", "end b1"], "chat b waited for chat a, or a2 jumped a1"

    gates.gates["a1"].set()
    await sim.wait_idle(WAIT)
    a_log = [entry for entry in gates.log if entry.endswith(("a1", "a2", "a3"))]
    assert a_log == ["start a1", "end a1", "start a2", "end a2", "start a3", "end a3"]
    assert all(r.delivered and r.retries == 0 for r in sim.results)


async def test_ordering_none_lets_messages_of_one_chat_run_concurrently(sim_app: SimApp) -> None:
    bot = app_bot(sim_app, ordering=None)
    gates = Gates("a1", "a2")
    bot.on_text(gates.handler)
    first = asyncio.create_task(bot.aprocess_message(envelope(sim_app, "a1", "oc_a")))
    second = asyncio.create_task(bot.aprocess_message(envelope(sim_app, "a2", "oc_a")))
    await gates.reached("start a1")
    await gates.reached("start a2")  # both running at once: nothing serialised them
    gates.gates["a1"].set()
    gates.gates["a2"].set()
    await asyncio.gather(first, second)


async def test_custom_key_function_orders_by_sender_across_chats(sim_app: SimApp) -> None:
    arrivals = Arrivals(lambda e: e.sender_open_id if isinstance(e, MessageEvent) else None)
    bot = app_bot(sim_app, ordering=arrivals)
    gates = Gates("x1")
    bot.on_text(gates.handler)

    def start(text: str, chat: str, sender: str) -> asyncio.Task[Any]:
        return asyncio.create_task(bot.aprocess_message(envelope(sim_app, text, chat, sender=sender)))

    tasks = [start("x1", "oc_1", "ou_same")]
    await gates.reached("start x1")
    tasks += [start("x2", "oc_2", "ou_same"), start("y1", "oc_2", "ou_other")]
    await gates.reached("end y1")  # same chat as x2, other sender: not held back
    await arrivals.await_("x2")
    assert "start x2" not in gates.log, "same sender in another chat ran before x1 finished"
    gates.gates["x1"].set()
    await asyncio.gather(*tasks)
    assert gates.log.index("end x1") < gates.log.index("start x2")


async def test_card_callbacks_are_not_queued_behind_a_slow_message(
    sim_app: SimApp, serve: Serve, feishu_sim_factory: Callable[..., FeishuSimulator]
) -> None:
    bot = app_bot(sim_app)
    gates = Gates("slow")
    bot.on_text(gates.handler)
    bot.on_card_action(lambda event: {"toast": {"type": "info", "content": "clicked"}})
    sim = feishu_sim_factory(await serve(bot))
    sim.deliver_async(payloads.text_message(sim_app, "slow", chat_id="oc_a"))
    await gates.reached("start slow")
    result = await sim.send_card_action({"k": "v"}, open_chat_id="oc_a")
    assert result.ok and result.response == {"toast": {"type": "info", "content": "clicked"}}
    gates.gates["slow"].set()
    await sim.wait_idle(WAIT)


async def test_a_chat_is_unlocked_after_a_failed_and_a_cancelled_handler(sim_app: SimApp) -> None:
    bot = app_bot(sim_app)
    gates = Gates("hang")
    ran: list[str] = []

    @bot.on_text
    async def handler(event: MessageEvent) -> None:
        if text_of(event) == "boom":
            raise ValueError("handler bug")
        if text_of(event) == "hang":
            await gates.handler(event)
        ran.append(text_of(event))

    await bot.aprocess_message(envelope(sim_app, "boom", "oc_a"))
    hung = asyncio.create_task(bot.aprocess_message(envelope(sim_app, "hang", "oc_a")))
    await gates.reached("start hang")
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung
    await asyncio.wait_for(bot.aprocess_message(envelope(sim_app, "after", "oc_a")), WAIT)
    assert ran == ["after"]
    assert len(bot._async_locks) == 0, "a chat's lock outlived its messages"


# -- ordering, sync path (threads) -------------------------------------------------------------------------


def envelope(
    app: SimApp,
    text: str,
    chat: str,
    *,
    sender: str | None = None,
    create_time_ms: int | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """A relay envelope of a text message, encrypted and signed as Feishu does."""
    payload = payloads.text_message(
        app, text, chat_id=chat, sender_open_id=sender, create_time_ms=create_time_ms, message_id=message_id
    )
    request = build_request(
        app,
        payload,
        kind="event",
        timestamp=str(int(time.time())),
        nonce="n-1",
        request_id="req-" + secrets.token_hex(4),
    )
    body = request.body.decode()
    return {
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "body": json.loads(body),
        "raw_body": body,
    }


def test_sync_process_message_keeps_chat_order_across_threads(sim_app: SimApp) -> None:
    arrivals = Arrivals()
    bot = app_bot(sim_app, ordering=arrivals)
    gate = threading.Event()
    started = {name: threading.Event() for name in ("a1", "a2", "a3", "b1")}
    log: list[str] = []
    lock = threading.Lock()

    @bot.on_text
    def handler(event: MessageEvent) -> None:
        text = text_of(event)
        with lock:
            log.append(f"start {text}")
        started[text].set()
        if text == "a1":
            assert gate.wait(WAIT)
        with lock:
            log.append(f"end {text}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(bot.process_message, envelope(sim_app, "a1", "oc_a"))]
        assert started["a1"].wait(WAIT)
        for text in ("a2", "a3"):
            futures.append(pool.submit(bot.process_message, envelope(sim_app, text, "oc_a")))
            arrivals.wait(text)
        pool.submit(bot.process_message, envelope(sim_app, "b1", "oc_b")).result(WAIT)
        assert log == ["start a1", "start b1", "end b1"]
        gate.set()
        for future in futures:
            future.result(WAIT)
    a_log = [entry for entry in log if not entry.endswith("b1")]
    assert a_log == ["start a1", "end a1", "start a2", "end a2", "start a3", "end a3"]
    assert len(bot._sync_locks) == 0, "a chat's lock outlived its messages"


def test_ordering_accepts_only_chat_none_or_a_function(sim_app: SimApp) -> None:
    with pytest.raises(ConfigurationError):
        app_bot(sim_app, ordering="user")  # type: ignore[arg-type]


# -- stale messages ------------------------------------------------------------------------------------------


def test_messages_older_than_drop_older_than_are_skipped_and_logged_without_content(
    sim_app: SimApp, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(1_800_000_000.0)
    bot = app_bot(sim_app, drop_older_than=timedelta(minutes=30), clock=clock)
    handled: list[str] = []
    bot.on_text(lambda event: handled.append(text_of(event)))
    old_ms = int((clock.now - 31 * 60) * 1000)
    fresh_ms = int((clock.now - 29 * 60) * 1000)
    with caplog.at_level(logging.INFO, logger="wslarkbot.bot"):
        result = bot.dispatch(
            envelope(sim_app, "secret question", "oc_a", create_time_ms=old_ms, message_id="om_old")
        )
        bot.process_message(envelope(sim_app, "fresh question", "oc_a", create_time_ms=fresh_ms))
    assert result.skipped == "stale" and result.response is None
    assert handled == ["fresh question"]
    [record] = [r for r in caplog.records if "om_old" in r.getMessage()]
    assert record.levelno == logging.INFO and "1860 s old" in record.getMessage()
    assert "secret question" not in caplog.text


def test_stale_messages_are_handled_when_drop_older_than_is_off(sim_app: SimApp) -> None:
    bot = app_bot(sim_app)
    handled: list[str] = []
    bot.on_text(lambda event: handled.append(text_of(event)))
    bot.process_message(envelope(sim_app, "from 2020", "oc_a", create_time_ms=1_600_000_000_000))
    assert handled == ["from 2020"]


@pytest.mark.parametrize("value", [0, -5, "30", timedelta(0)])
def test_drop_older_than_rejects_non_positive_durations(sim_app: SimApp, value: Any) -> None:
    with pytest.raises(ConfigurationError):
        app_bot(sim_app, drop_older_than=value)


# -- deduplication -------------------------------------------------------------------------------------


async def test_message_pushed_twice_under_new_event_id_is_handled_once_with_dedup(
    sim_app: SimApp, serve: Serve, feishu_sim_factory: Callable[..., FeishuSimulator]
) -> None:
    bot = app_bot(sim_app, dedup=True)
    handled: list[str] = []
    bot.on_text(lambda event: handled.append(event.message_id))
    sim = feishu_sim_factory(await serve(bot))
    result = await sim.send_text_message("hi", duplicate_message_new_event_id=True, duplicate=True)
    assert result.delivered and [d.delivered for d in result.duplicates] == [True, True]
    assert len(handled) == 1
