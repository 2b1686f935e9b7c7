"""Dispatcher: what is answered when (replies, acks, nothing), bounded concurrency. No sockets."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from wslarkbot import wire
from wslarkbot.bot import Bot
from wslarkbot.client import ClientStatus, Dispatcher
from wslarkbot.sim import payloads
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.protocol import RequestKind, build_request

WAIT = 5.0  # upper bound for anything that should happen promptly


class RecordingSink:
    """A ReplySink that records what it was asked to send and lets tests await it."""

    def __init__(self, *, acks: bool = True) -> None:
        self.acks = acks
        self.sent: list[tuple[str, str, Any]] = []
        self._changed = asyncio.Condition()

    async def _record(self, item: tuple[str, str, Any]) -> None:
        async with self._changed:
            self.sent.append(item)
            self._changed.notify_all()

    async def reply(self, request_id: str, body: Any) -> None:
        await self._record(("reply", request_id, body))

    async def ack(self, request_id: str) -> None:
        await self._record(("ack", request_id, None))

    async def nack(self, request_id: str) -> None:
        await self._record(("nack", request_id, None))

    async def wait_for(self, predicate: Callable[[list[tuple[str, str, Any]]], bool]) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.sent)), WAIT)


def envelope(app: SimApp, payload: dict[str, Any], kind: RequestKind, request_id: str) -> dict[str, Any]:
    """The envelope a relay would push for ``payload`` sent by Feishu."""
    req = build_request(
        app, payload, kind=kind, timestamp=str(int(time.time())), nonce="nonce", request_id=request_id
    )
    env = wire.Envelope.from_request(
        req.headers, req.body, app_id=app.app_id, org_id="hook", request_id=request_id
    )
    return env.to_dict()


@pytest.fixture
def app() -> SimApp:
    return SimApp.random()


@pytest.fixture
def bot(app: SimApp) -> Bot:
    return Bot(app.app_id, app.app_secret, app.verification_token, app.encrypt_key)


@pytest.fixture
async def executor() -> AsyncIterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown(wait=True)


def make_dispatcher(executor: ThreadPoolExecutor, **kwargs: Any) -> Dispatcher:
    return Dispatcher(executor=executor, status=kwargs.pop("status", ClientStatus()), **kwargs)


async def test_challenge_is_answered_with_a_reply(
    app: SimApp, bot: Bot, executor: ThreadPoolExecutor
) -> None:
    sink = RecordingSink()
    d = make_dispatcher(executor)
    env = envelope(app, payloads.url_verification(app, "ch-1"), "url_verification", "r1")
    await d.submit(bot, env, sink, request_id="r1")
    await sink.wait_for(lambda s: len(s) == 1)
    assert sink.sent == [("reply", "r1", {"challenge": "ch-1"})]


async def test_fast_event_is_acked_once_when_its_handler_finishes(
    app: SimApp, bot: Bot, executor: ThreadPoolExecutor
) -> None:
    seen: list[str] = []
    bot.on_text(lambda event: seen.append(event.text))
    sink = RecordingSink()
    d = make_dispatcher(executor, ack_after=10.0)
    await d.submit(bot, envelope(app, payloads.text_message(app, "hi"), "event", "r2"), sink, request_id="r2")
    assert await d.drain(WAIT)
    assert seen == ["hi"]
    assert sink.sent == [("ack", "r2", None)]


async def test_slow_event_is_acked_at_ack_after_while_the_handler_still_runs(
    app: SimApp, bot: Bot, executor: ThreadPoolExecutor
) -> None:
    gate = threading.Event()
    finished = threading.Event()

    @bot.on_text
    def slow(event: Any) -> None:
        gate.wait(WAIT)
        finished.set()

    sink = RecordingSink()
    d = make_dispatcher(executor, ack_after=0.05)
    await d.submit(bot, envelope(app, payloads.text_message(app, "x"), "event", "r3"), sink, request_id="r3")
    await sink.wait_for(lambda s: len(s) == 1)
    assert sink.sent == [("ack", "r3", None)]
    assert not finished.is_set(), "acked before the handler finished"
    gate.set()
    assert await d.drain(WAIT)
    assert sink.sent == [("ack", "r3", None)], "exactly one ack, nothing after the handler"


async def test_ack_after_zero_for_one_envelope_acks_its_event_on_receipt_but_never_a_challenge(
    app: SimApp, bot: Bot, executor: ThreadPoolExecutor
) -> None:
    """What the client does for unsigned envelopes of an nchan relay (it holds them open for a reply)."""
    gate = threading.Event()
    bot.on_text(lambda event: gate.wait(WAIT))
    sink = RecordingSink()
    d = make_dispatcher(executor, ack_after=60.0)
    event = envelope(app, payloads.text_message(app, "x"), "event", "r-ev")
    challenge = envelope(app, payloads.url_verification(app, "ch-0"), "url_verification", "r-ch")
    try:
        await d.submit(bot, event, sink, request_id="r-ev", ack_after=0.0)
        await sink.wait_for(lambda s: len(s) == 1)
        assert sink.sent == [("ack", "r-ev", None)], "acked while the handler waits, not after 60 s"
        await d.submit(bot, challenge, sink, request_id="r-ch", ack_after=0.0)
        await sink.wait_for(lambda s: len(s) == 2)
    finally:
        gate.set()
    assert await d.drain(WAIT)
    assert sink.sent == [("ack", "r-ev", None), ("reply", "r-ch", {"challenge": "ch-0"})]


async def test_slow_card_callback_gets_no_early_ack_only_its_reply(
    app: SimApp, bot: Bot, executor: ThreadPoolExecutor
) -> None:
    gate = threading.Event()
    started = threading.Event()

    @bot.on_card_action
    def clicked(event: Any) -> dict[str, Any]:
        started.set()
        gate.wait(WAIT)
        return {"toast": {"type": "success", "content": "done"}}

    sink = RecordingSink()
    d = make_dispatcher(executor, ack_after=0.01)
    await d.submit(
        bot, envelope(app, payloads.card_action(app, {"k": "v"}), "callback", "r4"), sink, request_id="r4"
    )
    assert await asyncio.to_thread(started.wait, WAIT)
    assert not await d.drain(0.1), "still running well past ack_after"
    assert sink.sent == []
    gate.set()
    await sink.wait_for(lambda s: len(s) == 1)
    assert sink.sent == [("reply", "r4", {"toast": {"type": "success", "content": "done"}})]


async def test_bad_signature_is_nacked_and_logged_with_what_to_check(
    app: SimApp, bot: Bot, executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    status = ClientStatus()
    env = envelope(app, payloads.text_message(app, "x"), "event", "r5")
    env["headers"]["x-lark-signature"] = "0" * 64
    sink = RecordingSink()
    d = make_dispatcher(executor, status=status)
    with caplog.at_level(logging.WARNING, logger="wslarkbot.client"):
        await d.submit(bot, env, sink, request_id="r5")
        assert await d.drain(WAIT)
    assert sink.sent == [("nack", "r5", None)]
    assert status.rejected == 1
    (line,) = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert "SignatureError" in line and "check the Encrypt Key" in line


async def test_event_or_callback_whose_handler_raises_is_nacked_so_feishu_delivers_it_again(
    app: SimApp, bot: Bot, executor: ThreadPoolExecutor
) -> None:
    def boom(event: Any) -> None:
        raise ValueError("handler bug")

    bot.on_text(boom)
    bot.on_card_action(boom)
    sink = RecordingSink()
    d = make_dispatcher(executor)
    await d.submit(bot, envelope(app, payloads.text_message(app, "x"), "event", "e1"), sink, request_id="e1")
    await d.submit(bot, envelope(app, payloads.card_action(app), "callback", "c1"), sink, request_id="c1")
    assert await d.drain(WAIT)
    assert sorted(sink.sent) == [("nack", "c1", None), ("nack", "e1", None)]


async def test_ack_failures_keeps_acking_an_event_whose_handler_raised(
    app: SimApp, bot: Bot, executor: ThreadPoolExecutor
) -> None:
    def boom(event: Any) -> None:
        raise ValueError("handler bug")

    bot.on_text(boom)
    sink = RecordingSink()
    d = make_dispatcher(executor, ack_failures=True)
    await d.submit(bot, envelope(app, payloads.text_message(app, "x"), "event", "e1"), sink, request_id="e1")
    assert await d.drain(WAIT)
    assert sink.sent == [("ack", "e1", None)]


async def test_a_handler_failing_after_the_early_ack_is_logged_as_not_retried(
    app: SimApp, bot: Bot, executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    gate = threading.Event()

    def slow_boom(event: Any) -> None:
        gate.wait(WAIT)
        raise ValueError("late handler bug")

    bot.on_text(slow_boom)
    sink = RecordingSink()
    d = make_dispatcher(executor, ack_after=0.05)
    with caplog.at_level(logging.ERROR, logger="wslarkbot.client"):
        await d.submit(
            bot, envelope(app, payloads.text_message(app, "x"), "event", "e2"), sink, request_id="e2"
        )
        await sink.wait_for(lambda s: len(s) == 1)
        gate.set()
        assert await d.drain(WAIT)
    assert sink.sent == [("ack", "e2", None)]
    assert any("failed after the event was acked" in r.getMessage() for r in caplog.records)


async def test_original_protocol_sends_only_non_empty_results(
    app: SimApp, bot: Bot, executor: ThreadPoolExecutor
) -> None:
    sink = RecordingSink(acks=False)
    d = make_dispatcher(executor, ack_after=0.0)
    await d.submit(bot, envelope(app, payloads.text_message(app, "x"), "event", "e2"), sink, request_id="e2")
    await d.submit(
        bot,
        envelope(app, payloads.url_verification(app, "ch"), "url_verification", "v2"),
        sink,
        request_id="v2",
    )
    assert await d.drain(WAIT)
    assert sink.sent == [("reply", "v2", {"challenge": "ch"})]


async def test_submit_waits_while_max_in_flight_envelopes_run(
    app: SimApp, bot: Bot, executor: ThreadPoolExecutor
) -> None:
    gate = threading.Event()
    bot.on_text(lambda event: gate.wait(WAIT))
    sink = RecordingSink()
    d = make_dispatcher(executor, max_in_flight=1, ack_after=10.0)
    await d.submit(bot, envelope(app, payloads.text_message(app, "1"), "event", "q1"), sink, request_id="q1")
    second = asyncio.ensure_future(
        d.submit(bot, envelope(app, payloads.text_message(app, "2"), "event", "q2"), sink, request_id="q2")
    )
    done, _ = await asyncio.wait({second}, timeout=0.1)
    assert not done, "the second envelope waits for a free slot"
    assert d.in_flight == 1
    gate.set()
    await asyncio.wait_for(second, WAIT)
    assert await d.drain(WAIT)
    assert [s[1] for s in sink.sent] == ["q1", "q2"]


async def test_each_envelope_is_verified_and_decrypted_once_on_the_client(
    app: SimApp, bot: Bot, executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wslarkbot import crypto

    counts = {"decrypt": 0, "signature": 0}
    decrypt, verify = crypto.decrypt, crypto.verify_event_signature

    def counting_decrypt(*args: Any) -> bytes:
        counts["decrypt"] += 1
        return decrypt(*args)

    def counting_verify(*args: Any) -> None:
        counts["signature"] += 1
        verify(*args)

    monkeypatch.setattr(crypto, "decrypt", counting_decrypt)
    monkeypatch.setattr(crypto, "verify_event_signature", counting_verify)
    handled: list[str] = []
    bot.on_text(lambda event: handled.append(event.text))
    sink = RecordingSink()
    d = make_dispatcher(executor)
    await d.submit(
        bot, envelope(app, payloads.text_message(app, "once"), "event", "o1"), sink, request_id="o1"
    )
    assert await d.drain(WAIT)
    assert handled == ["once"] and sink.sent == [("ack", "o1", None)]
    assert counts == {"decrypt": 1, "signature": 1}
