"""webhook.py: a Bot served on real HTTP (127.0.0.1:0), driven by httpx and by the Feishu simulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from wslarkbot import crypto
from wslarkbot.bot import Bot
from wslarkbot.cards import CardActionResponse
from wslarkbot.events import CardAction, FeishuEvent, LegacyCardAction, MessageEvent
from wslarkbot.exceptions import ConfigurationError
from wslarkbot.sim import FeishuSimulator, SimApp
from wslarkbot.webhook import create_webhook_app, handle_webhook

TOKEN = "verification-token-for-tests"
KEY = "encrypt-key-for-tests"
TS, NONCE = "1700000000", "nonce-1"

Serve = Callable[..., Awaitable[str]]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(*bots, path=...) -> base URL`` of ``create_webhook_app`` on 127.0.0.1:0."""
    runners: list[web.AppRunner] = []

    async def start(*bots: Bot, **kwargs: Any) -> str:
        runner = web.AppRunner(create_webhook_app(*bots, **kwargs))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def make_bot(app_id: str = "cli_a1b2c3d4e5f60718", **kwargs: Any) -> tuple[Bot, list[FeishuEvent]]:
    options: dict[str, Any] = {"verification_token": TOKEN, "encrypt_key": KEY}
    options.update(kwargs)
    bot = Bot(app_id, **options)
    seen: list[FeishuEvent] = []
    bot.on_event(seen.append)
    return bot, seen


def signed(payload: dict[str, Any], key: str = KEY) -> tuple[dict[str, str], bytes]:
    """Headers and body of an encrypted, signed request, as Feishu sends it."""
    body = json.dumps({"encrypt": crypto.encrypt(json.dumps(payload), KEY)}, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json;charset=utf-8",
        "X-Lark-Request-Timestamp": TS,
        "X-Lark-Request-Nonce": NONCE,
        "X-Lark-Signature": crypto.event_signature(TS, NONCE, key, body),
    }
    return headers, body


def v2(event_type: str, event: dict[str, Any], token: str = TOKEN) -> dict[str, Any]:
    return {
        "schema": "2.0",
        "header": {
            "event_id": "ev-1",
            "event_type": event_type,
            "token": token,
            "create_time": "1",
            "app_id": "cli_a1b2c3d4e5f60718",
        },
        "event": event,
    }


CARD = {
    "operator": {"open_id": "ou_1"},
    "token": "c-1",
    "action": {"value": {"k": "v"}, "tag": "button"},
    "context": {"open_message_id": "om_1", "open_chat_id": "oc_1"},
}


# -- plain httpx ---------------------------------------------------------------------------------------


async def test_challenge_is_answered_over_http(serve: Serve) -> None:
    bot, seen = make_bot()
    base = await serve(bot)
    body = json.dumps(
        {
            "encrypt": crypto.encrypt(
                json.dumps({"challenge": "ch-1", "token": TOKEN, "type": "url_verification"}), KEY
            )
        }
    )
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{base}/webhook/{bot.app_id}", content=body)
    assert r.status_code == 200 and r.json() == {"challenge": "ch-1"}
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert seen == []


async def test_event_is_acknowledged_and_dispatched(serve: Serve) -> None:
    bot, seen = make_bot()
    base = await serve(bot)
    headers, body = signed(v2("im.chat.member.bot.added_v1", {"chat_id": "oc_1"}))
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{base}/webhook/{bot.app_id}", content=body, headers=headers)
    assert r.status_code == 200 and r.json() == {"msg": "success"}
    assert [e.event_type for e in seen] == ["im.chat.member.bot.added_v1"]


async def test_card_callback_response_is_the_http_body(serve: Serve) -> None:
    bot, _ = make_bot()

    @bot.on_card_action
    async def clicked(event: CardAction) -> dict[str, Any]:
        return {"toast": {"type": "success", "content": f"got {event.value['k']}"}}

    base = await serve(bot)
    headers, body = signed(v2("card.action.trigger", CARD))
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{base}/webhook/{bot.app_id}", content=body, headers=headers)
    assert r.status_code == 200
    assert r.json() == {"toast": {"type": "success", "content": "got v"}}


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda h, b: (h | {"X-Lark-Signature": "0" * 64}, b), 401),
        (lambda h, b: ({"Content-Type": h["Content-Type"]}, b), 401),
        (lambda h, b: (h, b"not json"), 400),
        (lambda h, b: ({"Content-Type": h["Content-Type"]}, b'{"encrypt":"AAAA"}'), 400),
        (lambda h, b: (h, b"[]"), 400),
    ],
    ids=["bad-signature", "no-signature", "not-json", "bad-ciphertext", "not-an-object"],
)
async def test_bad_requests_are_rejected_without_calling_handlers(
    serve: Serve, mutate: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]], status: int
) -> None:
    bot, seen = make_bot()
    base = await serve(bot)
    headers, body = mutate(*signed(v2("im.chat.member.bot.added_v1", {})))
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{base}/webhook/{bot.app_id}", content=body, headers=headers)
    assert r.status_code == status
    assert isinstance(r.json()["msg"], str)
    assert seen == []


async def test_wrong_token_is_401(serve: Serve) -> None:
    bot, seen = make_bot()
    base = await serve(bot)
    headers, body = signed(v2("im.chat.member.bot.added_v1", {}, token="other"))
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{base}/webhook/{bot.app_id}", content=body, headers=headers)
    assert r.status_code == 401 and seen == []


async def test_failing_callback_is_500_and_does_not_echo_the_error(serve: Serve) -> None:
    bot, _ = make_bot()

    @bot.on_card_action
    def broken(event: CardAction) -> None:
        raise RuntimeError("internal detail xyz")

    base = await serve(bot)
    headers, body = signed(v2("card.action.trigger", CARD))
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{base}/webhook/{bot.app_id}", content=body, headers=headers)
    assert r.status_code == 500 and "xyz" not in r.text


async def test_failing_event_handler_still_acknowledges(serve: Serve) -> None:
    """A retry would only deliver the same event to the same bug (module docstring)."""
    bot, _ = make_bot()
    bot.on_event(lambda event: 1 / 0)
    base = await serve(bot)
    headers, body = signed(v2("im.chat.member.bot.added_v1", {}))
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{base}/webhook/{bot.app_id}", content=body, headers=headers)
    assert r.status_code == 200 and r.json() == {"msg": "success"}


async def test_bots_are_routed_by_app_id_and_unknown_apps_get_404(serve: Serve) -> None:
    one, seen_one = make_bot("cli_1111111111111111")
    two, seen_two = make_bot("cli_2222222222222222")
    base = await serve(one, two)
    headers, body = signed(v2("im.chat.member.bot.added_v1", {}))
    async with httpx.AsyncClient() as client:
        r2 = await client.post(f"{base}/webhook/{two.app_id}", content=body, headers=headers)
        r404 = await client.post(f"{base}/webhook/cli_3333333333333333", content=body, headers=headers)
    assert r2.status_code == 200 and len(seen_two) == 1 and seen_one == []
    assert r404.status_code == 404


async def test_fixed_path_serves_a_single_bot(serve: Serve) -> None:
    bot, seen = make_bot()
    base = await serve(bot, path="/feishu")
    headers, body = signed(v2("im.chat.member.bot.added_v1", {}))
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{base}/feishu", content=body, headers=headers)
    assert r.status_code == 200 and len(seen) == 1


def test_app_configuration_errors() -> None:
    one, _ = make_bot("cli_1")
    with pytest.raises(ConfigurationError):
        create_webhook_app()
    with pytest.raises(ConfigurationError):
        create_webhook_app(one, make_bot("cli_1")[0])
    with pytest.raises(ConfigurationError):
        create_webhook_app(one, make_bot("cli_2")[0], path="/feishu")


async def test_unexpected_error_is_500_with_a_generic_message() -> None:
    """A user's ``parse`` override that breaks: the exception text never reaches the HTTP caller."""

    class Broken(Bot):
        def parse(self, message: Any) -> Any:
            raise KeyError("secret-detail")

    answer = await handle_webhook(Broken("cli_1"), {}, b'{"type":"url_verification"}')
    assert answer.status == 500 and answer.body == {"msg": "internal error"}


# -- driven by the Feishu simulator --------------------------------------------------------------------


def bot_for(app: SimApp) -> Bot:
    return Bot(
        app.app_id,
        app_secret=app.app_secret,
        verification_token=app.verification_token,
        encrypt_key=app.encrypt_key,
    )


@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "plain"])
async def test_simulator_round_trip(serve: Serve, encrypt: bool) -> None:
    """Challenge, text, v1 app_ticket, card action, legacy card and url preview, as Feishu sends them."""
    app = SimApp.random(encrypt=encrypt)
    bot = bot_for(app)
    texts: list[str | None] = []
    tickets: list[str] = []
    received = asyncio.Event()

    @bot.on_text
    async def on_text(event: MessageEvent) -> None:
        texts.append(event.text)
        received.set()

    bot.on_v1("app_ticket")(lambda event: tickets.append(event.event["app_ticket"]))

    @bot.on_card_action
    def on_card(event: CardAction | LegacyCardAction) -> CardActionResponse:
        return CardActionResponse(toast=str(event.value["n"]))

    bot.on("url.preview.get")(lambda event: {"inline": {"title": "preview"}})

    url = f"{await serve(bot)}/webhook/{app.app_id}"
    async with FeishuSimulator(app, event_url=url, retry_intervals=(0, 0, 0, 0)) as sim:
        assert (await sim.url_verification()).ok
        assert (await sim.url_verification(target="card")).ok
        delivered = await sim.send_text_message("你好 👋")
        assert delivered.delivered and delivered.retries == 0
        await asyncio.wait_for(received.wait(), 5)
        assert texts == ["你好 👋"]
        assert (await sim.send_app_ticket()).delivered and len(tickets) == 1
        card = await sim.send_card_action({"n": 1})
        assert card.ok and card.response == {"toast": {"type": "info", "content": "1"}}
        legacy = await sim.send_legacy_card_action({"n": 2})
        assert legacy.ok and legacy.response == {"toast": {"type": "info", "content": "2"}}
        preview = await sim.send_url_preview("https://example.com/x")
        assert preview.ok and preview.response == {"inline": {"title": "preview"}}


async def test_simulator_sees_a_bot_with_the_wrong_key_fail_and_retries(serve: Serve) -> None:
    app = SimApp.random()
    bot = Bot(app.app_id, verification_token=app.verification_token, encrypt_key="not-the-apps-key")
    seen: list[FeishuEvent] = []
    bot.on_event(seen.append)
    url = f"{await serve(bot)}/webhook/{app.app_id}"
    async with FeishuSimulator(app, event_url=url, retry_intervals=(0, 0, 0, 0)) as sim:
        result = await sim.send_text_message("hello")
        assert not result.delivered and result.retries == 4
        assert {a.status for a in result.attempts} == {401}
        assert not (await sim.url_verification()).ok
    assert seen == []
