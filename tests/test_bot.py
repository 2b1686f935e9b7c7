"""Bot: verification, decryption, dispatch and responses, without sockets.

Envelopes are built here the way the relay builds them, with ``wslarkbot.crypto`` doing what Feishu does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from wslarkbot import crypto
from wslarkbot.bot import Bot
from wslarkbot.events import CardAction, EventV1, FeishuEvent, LegacyCardAction, MessageEvent
from wslarkbot.exceptions import (
    ConfigurationError,
    DecryptError,
    MalformedRequestError,
    SignatureError,
    TokenMismatchError,
)
from wslarkbot.sim.openapi_server import FakeOpenAPI, RecordedCall
from wslarkbot.wire import Envelope

APP_ID = "cli_9f5343c580712544"
TOKEN = "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV"
KEY = "test-encrypt-key"
TS, NONCE = "1700000000", "nonce-abc"


def compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def envelope(
    payload: dict[str, Any],
    *,
    encrypt_key: str | None = KEY,
    sign: str | None = "event",
    sign_secret: str | None = None,
    raw_body: bool = True,
) -> dict[str, Any]:
    """A relay envelope for ``payload``: encrypted when ``encrypt_key``, signed as ``sign`` says.

    sign: ``"event"`` (sha256 with the encrypt key), ``"card"`` (legacy sha1 with the token), or None.
    """
    body: dict[str, Any] = (
        {"encrypt": crypto.encrypt(compact(payload), encrypt_key)} if encrypt_key else payload
    )
    text = compact(body)
    headers = {
        "content-type": "application/json;charset=utf-8",
        "x-request-id": "req-42",
        "x-app-id": APP_ID,
        "x-org-id": "hook",
    }
    if sign == "event":
        secret = sign_secret if sign_secret is not None else (encrypt_key or "")
        signature = crypto.event_signature(TS, NONCE, secret, text.encode("utf-8"))
    elif sign == "card":
        signature = crypto.card_signature(TS, NONCE, sign_secret or TOKEN, text.encode("utf-8"))
    if sign:
        headers.update(
            {"x-lark-request-timestamp": TS, "x-lark-request-nonce": NONCE, "x-lark-signature": signature}
        )
    env: dict[str, Any] = {"headers": headers, "body": body}
    if raw_body:
        env["raw_body"] = text
    return env


def sample(samples_dir: pathlib.Path, name: str, token: str | None = TOKEN) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((samples_dir / name).read_text("utf-8"))
    if token is not None:
        if "header" in data:
            data["header"]["token"] = token
        elif name != "card.action.trigger_v1.legacy.json":
            data["token"] = token
    return data


class Recorder:
    """Collects what handlers saw, thread-safely."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, name: str, value: Any) -> None:
        with self._lock:
            self.calls.append((name, value))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def make_bot(**kwargs: Any) -> tuple[Bot, Recorder]:
    options: dict[str, Any] = {"app_secret": "secret", "verification_token": TOKEN, "encrypt_key": KEY}
    options.update(kwargs)
    bot = Bot(APP_ID, **options)
    rec = Recorder()
    bot.on_event(lambda event: rec.add("any", event))
    return bot, rec


# -- url_verification ------------------------------------------------------------------------------


def test_encrypted_unsigned_challenge_is_answered(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot()
    env = envelope(sample(samples_dir, "url_verification.plain.json"), sign=None)
    assert bot.process_message(env) == {"challenge": "1b6aef1a-401f-406a-be41-f48911eabcef"}
    assert rec.calls == []


def test_plain_challenge_is_answered_without_encrypt_key(samples_dir: pathlib.Path) -> None:
    bot, _ = make_bot(encrypt_key=None)
    env = envelope(sample(samples_dir, "url_verification.plain.json"), encrypt_key=None, sign=None)
    assert bot.process_message(env) == {"challenge": "1b6aef1a-401f-406a-be41-f48911eabcef"}


def test_challenge_with_wrong_token_is_rejected(samples_dir: pathlib.Path) -> None:
    bot, _ = make_bot()
    env = envelope(sample(samples_dir, "url_verification.plain.json", token="wrong"), sign=None)
    with pytest.raises(TokenMismatchError):
        bot.process_message(env)


# -- verification failures never reach a handler -----------------------------------------------------


def test_wrong_signature_is_rejected(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot()
    env = envelope(sample(samples_dir, "im.message.receive_v1.json"), sign_secret="another key")
    with pytest.raises(SignatureError):
        bot.process_message(env)
    assert rec.calls == []


def test_missing_signature_is_rejected_when_encrypt_key_is_configured(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot()
    env = envelope(sample(samples_dir, "im.message.receive_v1.json"), sign=None)
    with pytest.raises(SignatureError):
        bot.process_message(env)
    assert rec.calls == []


def test_wrong_token_is_rejected(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot(encrypt_key=None)
    env = envelope(sample(samples_dir, "im.message.receive_v1.json", token="not-it"), encrypt_key=None)
    with pytest.raises(TokenMismatchError):
        bot.process_message(env)
    assert rec.calls == []


def test_unsigned_event_without_token_is_rejected_when_token_is_configured(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot(encrypt_key=None)
    data = sample(samples_dir, "app_ticket.v1.json")
    del data["token"]
    with pytest.raises(TokenMismatchError):
        bot.process_message(envelope(data, encrypt_key=None, sign=None))
    assert rec.calls == []


def test_bad_ciphertext_is_rejected(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot()
    env = envelope(sample(samples_dir, "im.message.receive_v1.json"), encrypt_key="the wrong key")
    env["headers"]["x-lark-signature"] = crypto.event_signature(TS, NONCE, KEY, env["raw_body"].encode())
    with pytest.raises(DecryptError):
        bot.process_message(env)
    garbage = {"headers": {}, "body": {"encrypt": "not base64!"}}
    with pytest.raises(DecryptError):
        bot.process_message(garbage)
    assert rec.calls == []


def test_tampered_ciphertext_fails_the_signature_before_decryption(samples_dir: pathlib.Path) -> None:
    """A signed request is verified before AES-CBC sees it: no padding oracle on signed requests."""
    bot, rec = make_bot()
    env = envelope(sample(samples_dir, "im.message.receive_v1.json"))
    ciphertext = env["body"]["encrypt"]
    env["body"]["encrypt"] = ciphertext[:-8] + ("A" if ciphertext[-8] != "A" else "B") + ciphertext[-7:]
    env["raw_body"] = compact(env["body"])
    with pytest.raises(SignatureError):
        bot.process_message(env)
    assert rec.calls == []


def test_unsigned_decrypt_failures_are_indistinguishable() -> None:
    """Bad padding and a plaintext that is not JSON give the same error message."""
    bot, _ = make_bot()
    messages = []
    bodies = [{"encrypt": crypto.encrypt("not json", KEY)}, {"encrypt": crypto.encrypt("{}", "other key")}]
    for body in bodies:
        with pytest.raises(DecryptError) as info:
            bot.process_message({"headers": {}, "body": body})
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_encrypted_body_without_configured_key_is_rejected(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot(encrypt_key=None)
    with pytest.raises(DecryptError):
        bot.process_message(envelope(sample(samples_dir, "im.message.receive_v1.json")))
    assert rec.calls == []


@pytest.mark.parametrize(
    "message", [{"body": {}}, {"headers": {}, "body": []}, {"headers": {}, "body": {}}, "not json", b"[1]"]
)
def test_malformed_envelopes_are_rejected(message: Any) -> None:
    bot, rec = make_bot(encrypt_key=None)
    with pytest.raises(MalformedRequestError):
        bot.process_message(message)
    assert rec.calls == []


def test_signature_headers_are_ignored_without_encrypt_key(samples_dir: pathlib.Path) -> None:
    """Feishu signs with the encrypt key only (protocol.md §3A), so there is nothing to check."""
    bot, rec = make_bot(encrypt_key=None)
    env = envelope(sample(samples_dir, "im.message.receive_v1.json"), encrypt_key=None, sign_secret="junk")
    request = bot.parse(env)
    assert request.signature_checked is False and request.encrypted is False
    bot.process_message(env)
    assert rec.names == ["any"]


def test_parse_reports_what_was_verified(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot()
    request = bot.parse(envelope(sample(samples_dir, "im.message.receive_v1.json")))
    assert request.encrypted and request.signature_checked
    assert isinstance(request.event, MessageEvent)
    assert request.request_id == "req-42" and not request.expects_reply
    assert rec.calls == []  # parse calls no handler


# -- seed compatibility ------------------------------------------------------------------------------


def test_seed_style_subclass_receives_decrypted_data_and_raw_message(samples_dir: pathlib.Path) -> None:
    seen: list[tuple[Any, Any, dict[str, Any]]] = []

    class MyBot(Bot):
        def on_message(self, data: Any, raw_message: Any, **kwargs: Any) -> None:
            if "header" in data and data["header"]["event_type"] == "im.message.receive_v1":
                text = json.loads(data["event"]["message"]["content"])["text"]
                seen.append((text, raw_message, kwargs))

    bot = MyBot(APP_ID, app_secret="xxx", encrypt_key=KEY, verification_token=TOKEN)
    env = envelope(sample(samples_dir, "im.message.receive_v1.json"))
    assert bot.process_message(env) is None
    assert seen == [("@_user_1 hello", env, {})]


async def test_async_on_message_override_is_awaited(samples_dir: pathlib.Path) -> None:
    seen: list[str] = []

    class AsyncBot(Bot):
        async def on_message(self, data: Any, raw_message: Any, **kwargs: Any) -> Any:
            seen.append(data["header"]["event_type"])
            return {"toast": {"type": "info", "content": "hi"}}

    bot = AsyncBot(APP_ID, verification_token=TOKEN, encrypt_key=KEY)
    response = await bot.aprocess_message(envelope(sample(samples_dir, "card.action.trigger.json")))
    assert response == {"toast": {"type": "info", "content": "hi"}}
    assert seen == ["card.action.trigger"]


def test_subclass_can_call_default_on_message_to_reach_decorators(samples_dir: pathlib.Path) -> None:
    class Wrapper(Bot):
        def on_message(self, data: Any, raw_message: Any, **kwargs: Any) -> Any:
            return super().on_message(data, raw_message, **kwargs)

    bot = Wrapper(APP_ID, verification_token=TOKEN, encrypt_key=KEY)
    bot.on_card_action(lambda event: {"toast": {"type": "success", "content": "via super"}})
    response = bot.process_message(envelope(sample(samples_dir, "card.action.trigger.json")))
    assert response == {"toast": {"type": "success", "content": "via super"}}


# -- decorators --------------------------------------------------------------------------------------


def test_decorators_dispatch_by_type_and_text_in_registration_order(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot()

    @bot.on("im.message.receive_v1")
    def by_type(event: MessageEvent) -> None:
        rec.add("by_type", event.message_id)

    @bot.on_text
    def text(event: MessageEvent) -> None:
        rec.add("text", event.text)

    @bot.on("im.chat.member.bot.added_v1")
    def other(event: FeishuEvent) -> None:
        rec.add("other", event)

    assert bot.process_message(envelope(sample(samples_dir, "im.message.receive_v1.json"))) is None
    assert rec.names == ["any", "by_type", "text"]
    assert rec.calls[1][1] == "om_5ce6d572455d361153b7cb51da133945"
    assert rec.calls[2][1] == "@_user_1 hello"


def test_on_text_ignores_non_text_messages(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot()
    bot.on_text(lambda event: rec.add("text", event))
    data = sample(samples_dir, "im.message.receive_v1.json")
    data["event"]["message"].update(message_type="image", content='{"image_key":"img_1"}')
    bot.process_message(envelope(data))
    assert rec.names == ["any"]


def test_v1_app_ticket_reaches_on_v1_and_on(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot()
    bot.on_v1("app_ticket")(lambda event: rec.add("v1", event))
    bot.on("app_ticket")(lambda event: rec.add("on", event))
    bot.on_v1("p2p_chat_create")(lambda event: rec.add("wrong", event))
    assert bot.process_message(envelope(sample(samples_dir, "app_ticket.v1.json"))) is None
    assert rec.names == ["any", "v1", "on"]
    event = rec.calls[1][1]
    assert isinstance(event, EventV1) and event.event["app_ticket"] == "xxx"


class Toast:
    """A response object with ``to_dict()``, like the card builders'."""

    def to_dict(self) -> dict[str, Any]:
        return {"toast": {"type": "success", "content": "done"}}


def test_card_action_handler_return_value_is_the_response(samples_dir: pathlib.Path) -> None:
    bot, _ = make_bot()

    @bot.on_card_action
    def clicked(event: CardAction) -> Toast:
        assert event.value == {"key": "value"}
        return Toast()

    response = bot.process_message(envelope(sample(samples_dir, "card.action.trigger.json")))
    assert response == {"toast": {"type": "success", "content": "done"}}


def test_card_action_without_response_answers_empty_object(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot()
    assert bot.process_message(envelope(sample(samples_dir, "card.action.trigger.json"))) == {}
    assert rec.names == ["any"]


def test_first_non_none_response_wins_and_every_handler_runs(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot()
    bot.on_card_action(lambda event: {"toast": {"type": "info", "content": "first"}})
    bot.on_card_action(lambda event: rec.add("second", event) or {"toast": {"type": "info", "content": "2"}})
    response = bot.process_message(envelope(sample(samples_dir, "card.action.trigger.json")))
    assert response == {"toast": {"type": "info", "content": "first"}}
    assert rec.names == ["any", "second"]


def test_url_preview_is_a_callback_answered_by_its_handler(samples_dir: pathlib.Path) -> None:
    bot, _ = make_bot()
    bot.on("url.preview.get")(lambda event: {"inline": {"title": event.context["url"]}})
    response = bot.process_message(envelope(sample(samples_dir, "url.preview.get.json")))
    assert response == {"inline": {"title": "https://www.example.com/smartcard/test/111"}}


def test_legacy_card_with_sha1_signature_is_answered(samples_dir: pathlib.Path) -> None:
    bot, _ = make_bot()
    bot.on_card_action(lambda event: {"elements": [], "seen": event.open_message_id})
    env = envelope(sample(samples_dir, "card.action.trigger_v1.legacy.json"), encrypt_key=None, sign="card")
    request = bot.parse(env)
    assert isinstance(request.event, LegacyCardAction) and request.signature_checked
    assert bot.process_message(env) == {"elements": [], "seen": "om_abcdefg1234567890"}


def test_legacy_card_with_wrong_sha1_signature_is_rejected(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot()
    env = envelope(
        sample(samples_dir, "card.action.trigger_v1.legacy.json"),
        encrypt_key=None,
        sign="card",
        sign_secret="not the token",
    )
    with pytest.raises(SignatureError):
        bot.process_message(env)
    assert rec.calls == []


# -- sync and async handlers -------------------------------------------------------------------------


def test_async_handler_runs_under_process_message(samples_dir: pathlib.Path) -> None:
    bot, rec = make_bot()

    @bot.on_card_action
    async def clicked(event: CardAction) -> dict[str, Any]:
        await asyncio.sleep(0)
        rec.add("async", event.card_token)
        return {"toast": {"type": "info", "content": "async"}}

    response = bot.process_message(envelope(sample(samples_dir, "card.action.trigger.json")))
    assert response == {"toast": {"type": "info", "content": "async"}}
    assert rec.names == ["any", "async"]


async def test_aprocess_message_awaits_async_and_runs_sync_handlers_in_the_executor(
    samples_dir: pathlib.Path,
) -> None:
    bot, rec = make_bot()
    loop_thread = threading.current_thread().name

    @bot.on_text
    def sync_handler(event: MessageEvent) -> None:
        rec.add("sync", threading.current_thread().name)

    @bot.on_text
    async def async_handler(event: MessageEvent) -> None:
        rec.add("async", threading.current_thread().name)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="handlers") as pool:
        assert (
            await bot.aprocess_message(
                envelope(sample(samples_dir, "im.message.receive_v1.json")), executor=pool
            )
            is None
        )
    threads = dict(rec.calls[1:])
    assert threads["sync"].startswith("handlers")
    assert threads["async"] == loop_thread


async def test_aprocess_message_returns_card_response_from_sync_handler(samples_dir: pathlib.Path) -> None:
    bot, _ = make_bot()
    bot.on_card_action(lambda event: Toast())
    response = await bot.aprocess_message(envelope(sample(samples_dir, "card.action.trigger.json")))
    assert response == {"toast": {"type": "success", "content": "done"}}


async def test_aprocess_message_answers_challenge(samples_dir: pathlib.Path) -> None:
    bot, _ = make_bot()
    env = Envelope.from_dict(envelope(sample(samples_dir, "url_verification.plain.json"), sign=None))
    assert await bot.aprocess_message(env) == {"challenge": "1b6aef1a-401f-406a-be41-f48911eabcef"}


async def test_async_handler_under_process_message_inside_a_loop_fails_cleanly(
    samples_dir: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No loop can be started in a thread that runs one: the handler is reported failed, nothing leaks."""
    bot, _ = make_bot()

    async def clicked(event: CardAction) -> dict[str, Any]:
        return {"toast": {"type": "info", "content": "never"}}

    bot.on_card_action(clicked)
    with caplog.at_level(logging.ERROR, logger="wslarkbot.bot"):
        assert bot.process_message(envelope(sample(samples_dir, "card.action.trigger.json"))) is None
    assert "aprocess_message" in caplog.text


# -- handler failures ---------------------------------------------------------------------------------


def test_handler_exception_is_logged_without_payload_and_does_not_propagate(
    samples_dir: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    bot, rec = make_bot()

    @bot.on_text
    def broken(event: MessageEvent) -> None:
        raise ValueError("boom")

    bot.on_text(lambda event: rec.add("after", event))
    with caplog.at_level(logging.DEBUG, logger="wslarkbot"):
        assert bot.process_message(envelope(sample(samples_dir, "im.message.receive_v1.json"))) is None
    assert rec.names == ["any", "after"]  # later handlers still run
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1
    message = failures[0].getMessage()
    assert "im.message.receive_v1" in message and "req-42" in message and "broken" in message
    assert "hello" not in caplog.text and TOKEN not in caplog.text and KEY not in caplog.text


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_failing_callback_handler_answers_none(samples_dir: pathlib.Path, mode: str) -> None:
    bot, _ = make_bot()

    @bot.on_card_action
    def broken(event: CardAction) -> dict[str, Any]:
        raise RuntimeError("boom")

    env = envelope(sample(samples_dir, "card.action.trigger.json"))
    if mode == "sync":
        result = await asyncio.to_thread(bot.process_message, env)
    else:
        result = await bot.aprocess_message(env)
    assert result is None


def test_callback_handler_returning_a_non_object_counts_as_failure(samples_dir: pathlib.Path) -> None:
    bot, _ = make_bot()
    bot.on_card_action(lambda event: 42)
    assert bot.process_message(envelope(sample(samples_dir, "card.action.trigger.json"))) is None


# -- raw_body -----------------------------------------------------------------------------------------


def test_raw_body_lets_non_ascii_bodies_verify_where_re_encoding_would_not(samples_dir: pathlib.Path) -> None:
    """Feishu signs its exact bytes; ``json.dumps`` of the parsed body escapes non-ASCII (\\uXXXX)."""
    bot, rec = make_bot()
    data = sample(samples_dir, "card.action.trigger_v1.legacy.json")
    data["action"]["value"] = {"choice": "同意 ✅"}
    with_raw = envelope(data, encrypt_key=None, sign="card")
    bot.process_message(with_raw)
    assert rec.names == ["any"]
    assert rec.calls[0][1].value == {"choice": "同意 ✅"}

    without_raw = envelope(data, encrypt_key=None, sign="card", raw_body=False)
    with pytest.raises(SignatureError):
        bot.process_message(without_raw)
    assert rec.names == ["any"]


def test_re_encoded_ascii_body_still_verifies_for_old_relays(samples_dir: pathlib.Path) -> None:
    """An original relay sends no raw_body; compact JSON of an encrypted body is byte-identical."""
    bot, rec = make_bot()
    bot.process_message(envelope(sample(samples_dir, "im.message.receive_v1.json"), raw_body=False))
    assert rec.names == ["any"]


# -- construction -------------------------------------------------------------------------------------


def test_repr_shows_no_secret() -> None:
    bot = Bot(
        APP_ID,
        app_secret="s3cret",
        verification_token=TOKEN,
        encrypt_key=KEY,
        host="https://open.larksuite.com/",
    )
    assert bot.host == "https://open.larksuite.com"
    assert "s3cret" not in repr(bot) and TOKEN not in repr(bot) and KEY not in repr(bot)


# -- OpenAPI delegation (over real HTTP, against the fake Feishu OpenAPI) --------------------------------


@pytest.fixture
def api() -> Iterator[FakeOpenAPI]:
    """A running FakeOpenAPI that knows APP_ID with the secrets the tests use."""
    with FakeOpenAPI() as fake:
        fake.add_app(APP_ID, "secret")
        yield fake


def message_calls(api: FakeOpenAPI) -> list[RecordedCall]:
    """Every call but token fetches, each checked to carry a bearer token."""
    calls = [c for c in api.calls if "tenant_access_token" not in c.path]
    assert all(c.headers.get("authorization") == "Bearer ***" for c in calls)
    return calls


def api_bot(api: FakeOpenAPI, **kwargs: Any) -> Bot:
    return Bot(APP_ID, app_secret="secret", verification_token=TOKEN, encrypt_key=KEY, host=api.url, **kwargs)


def test_seed_bot_replies_through_the_openapi(samples_dir: pathlib.Path, api: FakeOpenAPI) -> None:
    """The original project's seed code, unchanged."""
    from wslarkbot.cards import (
        FeishuMessageCard,
        FeishuMessageDiv,
        FeishuMessageHr,
        FeishuMessageNote,
        FeishuMessagePlainText,
    )

    class MyBot(Bot):
        def on_message(self, data: Any, raw_message: Any, **kwargs: Any) -> None:
            if (
                "header" in data
                and data["header"]["event_type"] == "im.message.receive_v1"
                and data["event"]["message"]["message_type"] == "text"
            ):
                message_id = data["event"]["message"]["message_id"]
                text = json.loads(data["event"]["message"]["content"])["text"]
                self.reply_text(message_id, "reply: " + text)
                self.reply_card(
                    message_id,
                    FeishuMessageCard(
                        FeishuMessageDiv("reply"),
                        FeishuMessageHr(),
                        FeishuMessageDiv(text),
                        FeishuMessageNote(FeishuMessagePlainText("🤖")),
                    ),
                )

    api.add_app(APP_ID, "xxx")
    bot = MyBot(APP_ID, app_secret="xxx", encrypt_key=KEY, verification_token=TOKEN, host=api.url)
    bot.process_message(envelope(sample(samples_dir, "im.message.receive_v1.json")))
    path = "/open-apis/im/v1/messages/om_5ce6d572455d361153b7cb51da133945/reply"
    first, second = message_calls(api)
    assert (first.method, first.path, first.json["msg_type"], json.loads(first.json["content"])) == (
        "POST",
        path,
        "text",
        {"text": "reply: @_user_1 hello"},
    )
    assert (second.method, second.path, second.json["msg_type"], second.status) == (
        "POST",
        path,
        "interactive",
        200,
    )
    elements = json.loads(second.json["content"])["elements"]
    assert [e["tag"] for e in elements] == ["div", "hr", "div", "note"]
    assert elements[2]["text"]["content"] == "@_user_1 hello"
    bot.close()


def test_convenience_methods_delegate_with_their_arguments(api: FakeOpenAPI) -> None:
    api.add_message("om_1", APP_ID, "text", {"text": "question"})
    api.add_message("om_2", APP_ID, "interactive", {"elements": []})
    api.add_message("om_3", APP_ID, "interactive", {"elements": []})
    bot = Bot(APP_ID, app_secret="secret", host=api.url + "/")
    bot.send("ou_1", {"text": "a"})
    bot.send("oc_1", {"text": "b"}, "text", "chat_id", uuid="u-1")
    bot.send_text("oc_2", "c", receive_id_type="chat_id")
    bot.send_card("ou_2", {"elements": []})
    bot.reply("om_1", {"text": "d"}, reply_in_thread=True)
    bot.update("om_2", {"elements": [{"tag": "hr"}]})
    bot.update_card("om_3", {"elements": [{"tag": "hr"}]})
    calls = message_calls(api)
    assert [(c.method, c.path, c.query.get("receive_id_type"), c.status) for c in calls] == [
        ("POST", "/open-apis/im/v1/messages", "open_id", 200),
        ("POST", "/open-apis/im/v1/messages", "chat_id", 200),
        ("POST", "/open-apis/im/v1/messages", "chat_id", 200),
        ("POST", "/open-apis/im/v1/messages", "open_id", 200),
        ("POST", "/open-apis/im/v1/messages/om_1/reply", None, 200),
        ("PATCH", "/open-apis/im/v1/messages/om_2", None, 200),
        ("PATCH", "/open-apis/im/v1/messages/om_3", None, 200),
    ]
    bodies = [c.json for c in calls]
    assert bodies[0]["msg_type"] == "text" and bodies[0]["receive_id"] == "ou_1"
    assert bodies[1]["uuid"] == "u-1"
    assert bodies[3]["msg_type"] == "interactive"
    assert bodies[4]["reply_in_thread"] is True
    assert api.messages["om_2"].content == {"elements": [{"tag": "hr"}]}
    bot.close()


async def test_async_api_calls_the_openapi(api: FakeOpenAPI) -> None:
    bot = api_bot(api)
    result = await bot.async_api.reply_text("om_1", "hi")
    assert result["message_id"] in api.messages
    assert [c.path for c in message_calls(api)] == ["/open-apis/im/v1/messages/om_1/reply"]
    await bot.aclose()


def test_api_is_created_once_and_again_after_close(api: FakeOpenAPI) -> None:
    bot = api_bot(api)
    first = bot.api
    assert bot.api is first
    bot.close()
    assert bot.api is not first
    bot.close()


def test_api_without_app_secret_is_a_configuration_error() -> None:
    bot = Bot(APP_ID, verification_token=TOKEN)
    with pytest.raises(ConfigurationError):
        bot.reply_text("om_1", "hi")


def test_body_forwarded_as_text_is_parsed_and_signed_as_is(samples_dir: pathlib.Path) -> None:
    """A relay that forwards the body as a JSON string (no raw_body): those are the signed bytes."""
    bot, rec = make_bot()
    env = envelope(sample(samples_dir, "im.message.receive_v1.json"))
    env["body"] = env.pop("raw_body")
    request = bot.parse(env)
    assert request.signature_checked and isinstance(request.event, MessageEvent)
    env["body"] = env["body"].replace(":", ": ")  # not the bytes Feishu signed
    with pytest.raises(SignatureError):
        bot.parse(env)
    assert rec.calls == []
