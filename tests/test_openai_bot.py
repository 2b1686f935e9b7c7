"""examples/openai_bot.py end to end: Feishu (simulator) -> relay -> AsyncClient -> the bot -> a local
OpenAI-compatible server (streaming) -> cards on the fake Feishu OpenAPI.

Everything runs on loopback with real sockets. Waits are on FakeOpenAPI's recorded calls and on events,
never on sleeps; concurrency is proven by two scripted streams that each wait for the other to start.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import pathlib
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from types import ModuleType
from typing import Any

import pytest

from fake_openai import Fail, FakeOpenAI, Hang, Set, WaitFor
from wslarkbot.client import AsyncClient
from wslarkbot.relay.runner import RunningRelay, run_relay
from wslarkbot.relay.testing import test_config as relay_test_config
from wslarkbot.sim import FakeOpenAPI, FeishuSimulator, SimApp, payloads
from wslarkbot.sim.openapi_server import RecordedCall, StoredMessage

WAIT = 10.0
EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "openai_bot.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("openai_bot", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["openai_bot"] = module
    spec.loader.exec_module(module)
    return module


openai_bot = load_example()


# -- the harness --------------------------------------------------------------------------------------------


class Harness:
    """The running system, with helpers to talk to the bot as Feishu users do and read its cards."""

    def __init__(self, app: SimApp, sim: FeishuSimulator, api: FakeOpenAPI, llm: FakeOpenAI) -> None:
        self.app, self.sim, self.api, self.llm = app, sim, api, llm

    async def say(
        self,
        text: str,
        *,
        user: str = "ou_alice",
        chat: str | None = None,
        group: bool = False,
        at_bot: bool = False,
    ) -> str:
        """Push a text message; returns its message_id once Feishu counts it delivered."""
        payload = payloads.text_message(
            self.app,
            text,
            sender_open_id=user,
            chat_id=chat or f"oc_p2p_{user}",
            chat_type="group" if group else "p2p",
            at_bot=at_bot,
        )
        result = await self.sim.send_event(payload)
        assert result.delivered, result
        return str(payload["event"]["message"]["message_id"])

    def card_for(self, message_id: str) -> StoredMessage:
        [card] = [m for m in self.api.messages.values() if m.parent_id == message_id]
        assert card.msg_type == "interactive"
        return card

    async def card_id_for(self, message_id: str) -> str:
        """The CardKit card entity the answer to ``message_id`` shows (the bot streams through CardKit)."""

        def replied(call: RecordedCall) -> bool:
            return call.path.endswith(f"/{message_id}/reply") and call.status == 200

        await asyncio.to_thread(self.api.wait_for_calls, replied, 1, WAIT)
        content = self.card_for(message_id).content
        assert content["type"] == "card", "the answer is not a card entity"
        return str(content["data"]["card_id"])

    async def final_card(self, message_id: str) -> list[str]:
        """Wait until the answer to ``message_id`` reached its final state (the whole card replaced, streaming
        mode off); every text it showed, in order."""
        card_id = await self.card_id_for(message_id)
        path = f"/open-apis/cardkit/v1/cards/{card_id}"

        def closed(call: RecordedCall) -> bool:
            return call.method == "PUT" and call.path == path and call.status == 200

        await asyncio.to_thread(self.api.wait_for_calls, closed, 1, WAIT)
        entity = self.api.card_entity(card_id)
        assert entity is not None and not entity.streaming
        (created,) = [c for c in self.api.calls_to("/cardkit/v1/cards", "POST") if _created(c) == card_id]
        texts = [text_v2(json.loads(created.json["data"]))]
        for call in self.api.calls:
            if call.path == f"{path}/elements/answer/content" and call.status == 200:
                texts.append(str(call.json["content"]))
            elif closed(call):
                texts.append(text_v2(json.loads(call.json["card"]["data"])))
        return texts

    async def note(self, message_id: str) -> str:
        """The text of a one-shot reply card (commands)."""

        def replied(call: RecordedCall) -> bool:
            return call.path.endswith(f"/{message_id}/reply") and call.status == 200

        await asyncio.to_thread(self.api.wait_for_calls, replied, 1, WAIT)
        return text_of(self.card_for(message_id).content)


def text_of(card: dict[str, Any]) -> str:
    return str(card["elements"][0]["content"])


def text_v2(card: dict[str, Any]) -> str:
    return str(card["body"]["elements"][0]["content"])


def _created(call: RecordedCall) -> str | None:
    """The card_id a create-card-entity call was answered with (the fake records the answer's data)."""
    return call.answer_data.get("card_id") if call.answer_data else None


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    config = relay_test_config(challenge_timeout=0.9, callback_timeout=2.0, ack_timeout=3.0)
    async with run_relay(config) as r:
        yield r


@pytest.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


MakeHarness = Callable[..., Any]


@pytest.fixture
async def start(
    sim_app: SimApp,
    relay: RunningRelay,
    fake_openapi: FakeOpenAPI,
    llm: FakeOpenAI,
    feishu_sim_factory: Callable[..., FeishuSimulator],
) -> AsyncIterator[MakeHarness]:
    """``await start(**settings_changes) -> Harness``: the bot connected through the relay."""
    stack: list[Any] = []

    async def make(**changes: Any) -> Harness:
        settings = openai_bot.Settings(
            app_id=sim_app.app_id,
            app_secret=sim_app.app_secret,
            verification_token=sim_app.verification_token,
            encrypt_key=sim_app.encrypt_key,
            feishu_host=fake_openapi.url,
            openai_base_url=llm.base_url,
            openai_api_key="sk-test",
            model="fake-model",
            system_role="You are terse.",
            llm_max_retries=0,
            llm_timeout=5.0,
            bot_open_id=sim_app.bot_open_id,
            server=f"127.0.0.1:{relay.port}",
        )
        settings = replace(settings, **changes)
        openai_client = openai_bot.make_llm(settings)
        bot = openai_bot.build_bot(settings, llm=openai_client)
        client = AsyncClient(bot, server=settings.server, ack_after=1.0)
        await client.__aenter__()
        stack.append((client, bot, openai_client))
        assert await client.wait_ready(WAIT)
        sim = feishu_sim_factory(f"{relay.url}/hook/{sim_app.app_id}")
        return Harness(sim_app, sim, fake_openapi, llm)

    yield make
    for client, bot, openai_client in stack:
        await client.__aexit__(None, None, None)
        await bot.aclose()
        await openai_client.close()


# -- tests ---------------------------------------------------------------------------------------------------


async def test_answer_streams_into_a_thinking_card_then_the_final_card(start: MakeHarness) -> None:
    h = await start()
    h.llm.script("What is 6 x 7?", "The", " answer", Set("first"), WaitFor("go"), " is", " 42", ".")
    asked = asyncio.create_task(h.say("What is 6 x 7?"))
    await asyncio.wait_for(h.llm.event("first").wait(), WAIT)

    def showing(text: str) -> Callable[[RecordedCall], bool]:
        return lambda c: c.path.endswith("/elements/answer/content") and c.json["content"] == text

    await asyncio.to_thread(h.api.wait_for_calls, showing("The answer"), 1, WAIT)  # streamed mid-answer
    h.llm.event("go").set()
    texts = await h.final_card(await asyncio.wait_for(asked, WAIT))

    assert texts[0] == "thinking..." and texts[-1] == "The answer is 42."
    assert "The answer" in texts[1:-1]
    assert all(b.startswith(a) or a == "thinking..." for a, b in itertools.pairwise(texts))
    assert all(c.code == 0 for c in h.api.calls_to("/im/v1/messages"))
    assert all(c.code == 0 for c in h.api.calls_to("/cardkit/v1/cards"))


async def test_second_question_carries_the_first_exchange(start: MakeHarness) -> None:
    h = await start()
    h.llm.script("What is 6 x 7?", "42")
    h.llm.script("And doubled?", "84")
    await h.final_card(await h.say("What is 6 x 7?"))
    await h.final_card(await h.say("And doubled?"))
    assert h.llm.request_for("And doubled?")["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 6 x 7?"},
        {"role": "assistant", "content": "42"},
        {"role": "user", "content": "And doubled?"},
    ]
    request = h.llm.request_for("And doubled?")
    assert request["model"] == "fake-model" and request["temperature"] == 0.7


async def test_system_command_sets_the_role_and_starts_a_new_conversation(start: MakeHarness) -> None:
    h = await start()
    await h.final_card(await h.say("first question"))
    assert "New role set" in await h.note(await h.say("/system You are a pirate."))
    await h.final_card(await h.say("second question"))
    assert h.llm.request_for("second question")["messages"] == [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "second question"},
    ]


async def test_help_and_clear_commands(start: MakeHarness) -> None:
    h = await start()
    assert "/system <role>" in await h.note(await h.say("/help"))
    await h.final_card(await h.say("remember me"))
    assert "cleared" in await h.note(await h.say("/clear"))
    await h.final_card(await h.say("who am I?"))
    assert [m["role"] for m in h.llm.request_for("who am I?")["messages"]] == ["system", "user"]
    assert h.llm.questions() == ["remember me", "who am I?"], "commands never reach the model"


async def test_llm_error_is_shown_in_the_card(start: MakeHarness) -> None:
    h = await start(title="Assistant")
    h.llm.script("break", Fail(500))
    message_id = await h.say("break")
    states = await h.final_card(message_id)
    assert "returned an error (HTTP 500)" in states[-1]
    entity = h.api.card_entity(await h.card_id_for(message_id))
    assert entity is not None and entity.card["header"]["template"] == "red"


async def test_llm_that_hangs_times_out_in_the_card(start: MakeHarness) -> None:
    h = await start(llm_timeout=0.5)
    h.llm.script("slow", "partial", Hang())
    states = await h.final_card(await h.say("slow"))
    assert states[-1].startswith("partial")
    assert "did not answer in time" in states[-1]


async def test_two_users_do_not_share_history(start: MakeHarness) -> None:
    h = await start()
    await h.final_card(await h.say("alice's secret", user="ou_alice"))
    await h.final_card(await h.say("bob asks", user="ou_bob"))
    assert h.llm.request_for("bob asks")["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "bob asks"},
    ]


async def test_two_users_stream_at_the_same_time(start: MakeHarness) -> None:
    """Each scripted stream waits until the other has started: both finish only if they run at once."""
    h = await start()
    h.llm.script("alice asks", "A1", Set("alice started"), WaitFor("bob started"), " A2")
    h.llm.script("bob asks", "B1", Set("bob started"), WaitFor("alice started"), " B2")
    alice, bob = await asyncio.gather(h.say("alice asks", user="ou_alice"), h.say("bob asks", user="ou_bob"))
    assert (await h.final_card(alice))[-1] == "A1 A2"
    assert (await h.final_card(bob))[-1] == "B1 B2"


async def test_group_messages_are_answered_only_when_the_bot_is_mentioned(start: MakeHarness) -> None:
    h = await start()
    ignored = await h.say("just chatting", group=True, chat="oc_team")
    answered = await h.say("hey bot, hi", group=True, chat="oc_team", at_bot=True)
    await h.final_card(answered)  # same user and chat: handled after the first one
    assert h.llm.questions() == ["hey bot, hi"], "the mention placeholder is stripped, the other ignored"
    assert not [m for m in h.api.messages.values() if m.parent_id == ignored]


def test_settings_come_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "WSLARKBOT_APP_ID": "cli_env",
        "WSLARKBOT_APP_SECRET": "s",
        "WSLARKBOT_VERIFICATION_TOKEN": "t",
        "OPENAI_API_KEY": "sk-env",
        "WSLARKBOT_SERVER": "relay.example.com",
        "OPENAI_TEMPERATURE": "0.2",
        "WSLARKBOT_FEISHU_HOST": "open.larksuite.com",
        "WSLARKBOT_DROP_OLDER_THAN": "0",
    }
    settings = openai_bot.parse_settings(["--model", "qwen-plus", "--app-id", "cli_flag"], env)
    assert (settings.app_id, settings.model, settings.temperature) == ("cli_flag", "qwen-plus", 0.2)
    assert settings.feishu_host == "https://open.larksuite.com" and settings.drop_older_than is None
    assert "sk-env" not in repr(settings)
    with pytest.raises(SystemExit):
        openai_bot.parse_settings([], {"WSLARKBOT_APP_ID": "cli_x"})


def test_history_is_bounded_by_turns_and_characters() -> None:
    conversations = openai_bot.Conversations("role", max_turns=2, max_chars=20)
    for i in range(3):
        conversations.add("k", f"q{i}", f"a{i}")
    assert [m["content"] for m in conversations.messages("k", "q")] == ["role", "q1", "a1", "q2", "a2", "q"]
    conversations.add("k", "x" * 15, "y" * 10)
    assert [m["content"] for m in conversations.messages("k", "q")][1:-1] == ["x" * 15, "y" * 10]
