"""Streaming cards: the throttle core with a fake clock, both fronts against FakeOpenAPI over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from wslarkbot.bot import Bot
from wslarkbot.exceptions import ConfigurationError, FeishuAPIError
from wslarkbot.sim import FakeOpenAPI
from wslarkbot.sim.openapi_server import RecordedCall
from wslarkbot.streaming import (
    AsyncStreamingCard,
    CardStream,
    Send,
    StreamingCard,
    Wait,
    default_card,
    default_card_v2,
)

APP_ID, SECRET = "cli_streaming00000001", "secret"
USER_MESSAGE = "om_user_question"
WAIT = 5.0
INTERVAL = 0.25  # the default: 4 updates per second


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def card_text(card: Any) -> str:
    return str(card["elements"][0]["content"])


# -- the core, without I/O -------------------------------------------------------------------------------


def test_updates_within_the_interval_are_coalesced_into_the_latest_text() -> None:
    clock = Clock()
    stream = CardStream(clock=clock)
    assert card_text(stream.first_card()) == "thinking..."
    stream.created()
    for chunk in ("Hel", "lo", ", wor", "ld"):
        stream.append(chunk)
        assert stream.next_step() == Wait(pytest.approx(INTERVAL))
    clock.now += INTERVAL
    step = stream.next_step()
    assert isinstance(step, Send) and not step.final and card_text(step.card) == "Hello, world"
    stream.sending(step)
    stream.sent(step)
    assert stream.next_step() is None, "nothing new to show"
    clock.now += 10
    assert stream.next_step() is None


def test_final_card_waits_for_the_throttle_and_is_sent_once() -> None:
    clock = Clock()
    stream = CardStream(clock=clock, max_updates_per_second=2)
    stream.first_card("…")
    stream.created()
    stream.close({"elements": [{"tag": "markdown", "content": "final"}]})
    assert stream.next_step() == Wait(pytest.approx(0.5))
    clock.now += 0.5
    step = stream.next_step()
    assert isinstance(step, Send) and step.final and card_text(step.card) == "final"
    stream.sending(step)
    stream.send_failed(step)
    clock.now += 0.5
    assert stream.next_step() == step, "a failed final card stays pending"
    stream.sent(step)
    assert stream.done and stream.next_step() is None
    with pytest.raises(ConfigurationError):
        stream.append("late")


def test_the_interval_runs_from_the_answer_so_latency_cannot_bunch_requests() -> None:
    clock = Clock()
    stream = CardStream(clock=clock)
    stream.first_card()
    assert stream.next_step() is None
    clock.now += 0.3  # the create request took 0.3 s
    stream.created()
    stream.append("a")
    assert stream.next_step() == Wait(pytest.approx(INTERVAL))
    clock.now += INTERVAL
    step = stream.next_step()
    assert isinstance(step, Send)
    stream.sending(step)
    clock.now += 0.2  # the PATCH took 0.2 s
    stream.sent(step)
    stream.append("b")
    assert stream.next_step() == Wait(pytest.approx(INTERVAL))


def test_a_failed_update_is_not_retried_with_the_same_text() -> None:
    clock = Clock()
    stream = CardStream(clock=clock)
    stream.first_card()
    stream.created()
    stream.set_text("abc")
    clock.now += 1
    step = stream.next_step()
    assert isinstance(step, Send)
    stream.sending(step)
    stream.send_failed(step)
    clock.now += 1
    assert stream.next_step() is None
    stream.append("d")
    assert card_text(stream.next_step().card) == "abcd"  # type: ignore[union-attr]


def test_default_card_states_and_size_limit() -> None:
    thinking = default_card("", "thinking", title="Bot")
    assert card_text(thinking) == "thinking..." and thinking["header"]["template"] == "grey"
    assert thinking["config"]["update_multi"] is True
    streaming = default_card("partial", "streaming")
    assert [e["tag"] for e in streaming["elements"]] == ["markdown", "note"] and "header" not in streaming
    assert default_card("x", "error", title="Bot")["header"]["template"] == "red"
    huge = default_card("字" * 20_000, "done")
    assert len(json.dumps(huge, ensure_ascii=False).encode()) < 30 * 1024
    assert card_text(huge).endswith("…(truncated)")


def test_rate_must_be_positive() -> None:
    with pytest.raises(ConfigurationError):
        CardStream(max_updates_per_second=0)


# -- against FakeOpenAPI -----------------------------------------------------------------------------------


class Stamped:
    """When each request left the client (monotonic), recorded by a real HTTP transport."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, float]] = []

    def note(self, request: httpx.Request) -> None:
        self.sent.append((request.method, request.url.path, time.monotonic()))

    def patch_times(self) -> list[float]:
        return [t for method, _, t in self.sent if method == "PATCH"]


class AsyncStampingTransport(httpx.AsyncHTTPTransport):
    def __init__(self, stamps: Stamped) -> None:
        super().__init__()
        self.stamps = stamps

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.stamps.note(request)
        return await super().handle_async_request(request)


class StampingTransport(httpx.HTTPTransport):
    def __init__(self, stamps: Stamped) -> None:
        super().__init__()
        self.stamps = stamps

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.stamps.note(request)
        return super().handle_request(request)


@pytest.fixture
def api() -> Iterator[FakeOpenAPI]:
    with FakeOpenAPI() as fake:
        fake.add_app(APP_ID, SECRET)
        yield fake


@pytest.fixture
def stamps() -> Stamped:
    return Stamped()


@pytest_asyncio.fixture
async def bot(api: FakeOpenAPI, stamps: Stamped) -> AsyncIterator[Bot]:
    bot = Bot(
        APP_ID,
        app_secret=SECRET,
        host=api.url,
        http_transport=StampingTransport(stamps),
        async_http_transport=AsyncStampingTransport(stamps),
    )
    yield bot
    await bot.aclose()


def card_calls(api: FakeOpenAPI) -> list[RecordedCall]:
    """The reply that created the card and every PATCH, in arrival order."""
    return [c for c in api.calls if c.path.endswith("/reply") or c.method == "PATCH"]


def shown(call: RecordedCall) -> str:
    return card_text(json.loads(call.json["content"]))


def assert_spaced(times: list[float], interval: float = INTERVAL) -> None:
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= interval - 0.01 for gap in gaps), f"PATCHes closer than {interval} s: {gaps}"


async def wait_for_patch_showing(api: FakeOpenAPI, text: str) -> None:
    def showing(call: RecordedCall) -> bool:
        return call.method == "PATCH" and shown(call) == text

    await asyncio.to_thread(api.wait_for_calls, showing, 1, WAIT)


async def test_async_card_streams_growing_text_throttled_then_final(
    api: FakeOpenAPI, bot: Bot, stamps: Stamped
) -> None:
    card = await AsyncStreamingCard.reply(bot.async_api, USER_MESSAGE, mode="patch")
    for burst in (["The", " answer"], [" is", " 4", "2"], ["."]):
        for chunk in burst:
            card.append(chunk)  # a burst within one interval: coalesced into one PATCH
        await wait_for_patch_showing(api, card.text)
    await card.finish()

    calls = card_calls(api)
    assert [c.method for c in calls] == ["POST", "PATCH", "PATCH", "PATCH", "PATCH"]
    assert [shown(c) for c in calls] == [
        "thinking...",
        "The answer",
        "The answer is 42",
        "The answer is 42.",
        "The answer is 42.",
    ]
    final = json.loads(calls[-1].json["content"])
    assert [e["tag"] for e in final["elements"]] == ["markdown"], "the final card has no '…' note"
    assert all(c.code == 0 for c in calls), "FakeOpenAPI refused a PATCH (over 5 QPS?)"
    assert api.messages[card.message_id].content == final
    assert_spaced([t for m, p, t in stamps.sent if p.endswith("/reply") or m == "PATCH"])


async def test_fast_stream_stays_under_the_patch_limit(api: FakeOpenAPI, bot: Bot, stamps: Stamped) -> None:
    card = await AsyncStreamingCard.reply(bot.async_api, USER_MESSAGE, mode="patch")
    started = time.monotonic()
    for i in range(300):
        card.append(f"{i} ")
        if i % 20 == 0:
            await asyncio.sleep(0.05)  # a token stream's pace, not synchronisation
    await card.finish()
    elapsed = time.monotonic() - started
    patches = stamps.patch_times()
    assert len(patches) <= elapsed / INTERVAL + 2
    assert_spaced(patches)
    assert all(c.code == 0 for c in card_calls(api))
    assert card_text(api.messages[card.message_id].content) == card.text


async def test_failed_update_is_reported_and_streaming_continues(api: FakeOpenAPI, bot: Bot) -> None:
    errors: list[BaseException] = []
    card = await AsyncStreamingCard.reply(bot.async_api, USER_MESSAGE, mode="patch", on_error=errors.append)
    api.inject_error(230020, "frequency limit", path_contains=card.message_id)
    card.append("one")
    await asyncio.to_thread(api.wait_for_calls, lambda c: c.method == "PATCH", 1, WAIT)
    card.append(" two")
    await card.finish()
    assert [type(e) for e in errors] == [FeishuAPIError] and card.errors == errors
    assert errors[0].code == 230020  # type: ignore[attr-defined]
    assert card_text(api.messages[card.message_id].content) == "one two"


async def test_failed_final_update_raises_from_finish(api: FakeOpenAPI, bot: Bot) -> None:
    card = await AsyncStreamingCard.reply(bot.async_api, USER_MESSAGE, mode="patch")
    api.inject_error(230031, "the message was sent more than 14 days ago", path_contains=card.message_id)
    card.append("text")
    with pytest.raises(FeishuAPIError) as info:
        await card.finish()
    assert info.value.code == 230031


async def test_fail_shows_the_error_in_the_card(api: FakeOpenAPI, bot: Bot) -> None:
    card = await AsyncStreamingCard.reply(
        bot.async_api,
        USER_MESSAGE,
        render=lambda text, state: default_card(text, state, title="Assistant"),
    )
    card.append("Partial answer")
    await card.fail("LLM timed out")
    final = api.messages[card.message_id].content
    assert card_text(final) == "Partial answer\n\n**LLM timed out**"
    assert final["header"]["template"] == "red"
    with pytest.raises(ConfigurationError):
        card.append("more")


async def test_context_manager_fails_the_card_when_the_block_raises(api: FakeOpenAPI, bot: Bot) -> None:
    with pytest.raises(TimeoutError):
        async with await AsyncStreamingCard.reply(bot.async_api, USER_MESSAGE, mode="patch") as card:
            card.append("so far")
            raise TimeoutError("upstream")
    assert card_text(api.messages[card.message_id].content) == "so far\n\n**TimeoutError: upstream**"


async def test_reply_failure_raises_at_creation(api: FakeOpenAPI, bot: Bot) -> None:
    api.inject_error(230002, "bot is not in the chat", path_contains="/reply")
    with pytest.raises(FeishuAPIError):
        await AsyncStreamingCard.reply(bot.async_api, USER_MESSAGE, mode="patch")


async def test_send_creates_the_card_for_a_chat(api: FakeOpenAPI, bot: Bot) -> None:
    card = await AsyncStreamingCard.send(
        bot.async_api, "oc_chat", "starting", receive_id_type="chat_id", mode="patch"
    )
    await card.finish("done")
    [create] = api.calls_to("/im/v1/messages", "POST")
    assert create.query == {"receive_id_type": "chat_id"} and shown(create) == "starting"
    assert card_text(api.messages[card.message_id].content) == "done"


def test_sync_card_sends_due_updates_inline_and_the_rest_at_finish(
    api: FakeOpenAPI, bot: Bot, stamps: Stamped
) -> None:
    clock = Clock()
    card = StreamingCard.reply(bot.api, USER_MESSAGE, mode="patch", clock=clock)
    card.append("a")
    card.append("b")  # not due: no request
    assert api.calls_to("PATCH") == [] and [m for m, _, _ in stamps.sent].count("PATCH") == 0
    clock.now += INTERVAL
    card.append("c")  # due: sent inline, with everything so far
    assert [shown(c) for c in api.calls if c.method == "PATCH"] == ["abc"]
    card.append("d")
    clock.now += INTERVAL
    card.finish()
    assert [shown(c) for c in api.calls if c.method == "PATCH"] == ["abc", "abcd"]
    assert card.stream.done


def test_sync_finish_waits_for_the_throttle(api: FakeOpenAPI, bot: Bot, stamps: Stamped) -> None:
    card = StreamingCard.reply(bot.api, USER_MESSAGE, mode="patch")
    with card:
        card.update("x")
        card.update("xy")
    patch_times = stamps.patch_times()
    reply_time = next(t for _, p, t in stamps.sent if p.endswith("/reply"))
    assert len(patch_times) == 1 and patch_times[0] - reply_time >= INTERVAL - 0.01
    assert card_text(api.messages[card.message_id].content) == "xy"


def test_sync_card_is_safe_to_update_from_threads(api: FakeOpenAPI, bot: Bot) -> None:
    card = StreamingCard.reply(bot.api, USER_MESSAGE, mode="patch")
    threads = [threading.Thread(target=card.append, args=(str(i),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    card.finish()
    assert sorted(card_text(api.messages[card.message_id].content)) == sorted("01234567")


# -- CardKit (issue 20) ---------------------------------------------------------------------------------


def cardkit_calls(api: FakeOpenAPI, card_id: str) -> list[RecordedCall]:
    return [c for c in api.calls if f"/cardkit/v1/cards/{card_id}" in c.path]


def cardkit_text(call: RecordedCall) -> str:
    """What a CardKit call shows: the streamed text, or the final card's markdown."""
    if call.path.endswith("/content"):
        return str(call.json["content"])
    return str(json.loads(call.json["card"]["data"])["body"]["elements"][0]["content"])


async def test_async_card_streams_through_cardkit_with_growing_sequence_then_closes_streaming(
    api: FakeOpenAPI, bot: Bot, stamps: Stamped
) -> None:
    card = await AsyncStreamingCard.reply(bot.async_api, USER_MESSAGE)
    assert card.mode == "cardkit" and card.card_id is not None
    reply = api.messages[card.message_id].content
    assert reply == {"type": "card", "data": {"card_id": card.card_id}}
    for burst in (["The", " answer"], [" is", " 4", "2"]):
        for chunk in burst:
            card.append(chunk)
        await asyncio.to_thread(
            api.wait_for_calls,
            lambda c, t=card.text: c.path.endswith("/content") and cardkit_text(c) == t,
            1,
            WAIT,
        )
    card.append(".")
    await card.finish()

    calls = cardkit_calls(api, card.card_id)
    assert all(c.code == 0 for c in calls)
    sequences = [c.json["sequence"] for c in calls]
    assert sequences == sorted(set(sequences)) and sequences[0] == 1
    assert [cardkit_text(c) for c in calls][-1] == "The answer is 42."
    assert calls[-1].method == "PUT" and not calls[-1].path.endswith("/content")
    entity = api.card_entity(card.card_id)
    assert entity is not None and not entity.streaming
    assert entity.card["body"]["elements"][0]["content"] == "The answer is 42."
    times = [t for m, p, t in stamps.sent if "/cardkit/" in p]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 1 / 8 - 0.01 for gap in gaps), gaps


def test_sync_card_streams_through_cardkit(api: FakeOpenAPI, bot: Bot) -> None:
    clock = Clock()
    card = StreamingCard.reply(bot.api, USER_MESSAGE, clock=clock)
    assert card.mode == "cardkit" and card.card_id is not None
    card.append("a")
    clock.now += 1
    card.append("b")  # due: streamed inline
    clock.now += 1
    card.finish()
    calls = cardkit_calls(api, card.card_id)
    assert [cardkit_text(c) for c in calls] == ["ab", "ab"]
    assert [c.json["sequence"] for c in calls] == [1, 2]
    entity = api.card_entity(card.card_id)
    assert entity is not None and not entity.streaming


async def test_without_cardkit_the_card_streams_by_patch(api: FakeOpenAPI, bot: Bot) -> None:
    api.inject_error(99991672, "no permission: cardkit:card:write", path_contains="/cardkit/v1/cards")
    card = await AsyncStreamingCard.reply(bot.async_api, USER_MESSAGE)
    assert card.mode == "patch" and card.card_id is None
    card.append("still streams")
    await card.finish()
    assert card_text(api.messages[card.message_id].content) == "still streams"


async def test_cardkit_mode_does_not_fall_back(api: FakeOpenAPI, bot: Bot) -> None:
    api.inject_error(99991672, "no permission: cardkit:card:write", path_contains="/cardkit/v1/cards")
    with pytest.raises(FeishuAPIError):
        await AsyncStreamingCard.reply(bot.async_api, USER_MESSAGE, mode="cardkit")
    assert api.calls_to("/reply") == []


async def test_the_fake_refuses_a_sequence_that_does_not_grow(api: FakeOpenAPI, bot: Bot) -> None:
    created = await bot.async_api.create_card(default_card_v2("x", "thinking"))
    card_id = created["card_id"]
    await bot.async_api.stream_card_text(card_id, "answer", "one", 5)
    with pytest.raises(FeishuAPIError) as err:
        await bot.async_api.stream_card_text(card_id, "answer", "two", 5)
    assert err.value.code == 300317
    with pytest.raises(FeishuAPIError):  # no such element
        await bot.async_api.stream_card_text(card_id, "nope", "two", 6)
