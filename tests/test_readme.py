"""The README tells the truth: its public-API list is the package's, and its examples run as written (the
first bot, the handlers by decorator, the asyncio program)."""

from __future__ import annotations

import asyncio
import functools
import json
import pathlib
import re
import time
from typing import Any

import wslarkbot
from wslarkbot.relay.runner import RelayThread
from wslarkbot.relay.testing import test_config as relay_test_config
from wslarkbot.sim import payloads
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.protocol import RequestKind, build_request

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_public_api_in_readme_is_exactly_the_package_exports():
    block = re.search(r"```text\n(.*?)```", _section("Public API"), re.S)
    assert block is not None
    documented = block.group(1).split()
    assert sorted(documented) == sorted(wslarkbot.__all__)
    assert len(set(wslarkbot.__all__)) == len(wslarkbot.__all__)
    for name in documented:
        assert hasattr(wslarkbot, name), name


def test_star_import_does_not_pull_in_server_dependencies():
    import subprocess
    import sys

    code = "from wslarkbot import *; import sys; print('aiohttp' in sys.modules, 'redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def _subsection(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n### {title}\n")
    end = min(
        (i for i in (text.find("\n### ", start + 1), text.find("\n## ", start + 1)) if i != -1),
        default=len(text),
    )
    return text[start:end]


def _first_python_block(section: str, title: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, f"README has no python example under {title!r}"
    return blocks[0]


def _first_bot_example() -> str:
    return _first_python_block(_section("Your first bot"), "Your first bot")


def _envelope(app: SimApp, payload: dict[str, Any], kind: RequestKind, request_id: str) -> dict[str, Any]:
    """The relay envelope of one simulated Feishu request (encrypted and signed when ``app`` has a key)."""
    req = build_request(
        app, payload, kind=kind, timestamp=str(int(time.time())), nonce="n0nce", request_id=request_id
    )
    return {
        "headers": {k.lower(): v for k, v in req.headers.items()},
        "body": json.loads(req.body),
        "raw_body": req.body.decode("utf-8"),
    }


def test_readme_first_bot_replies_with_text_and_card(fake_openapi, sim_app):
    """The seed-style example, unchanged, answers an encrypted text message through Feishu's OpenAPI."""
    namespace: dict[str, object] = {}
    exec(compile(_first_bot_example(), "README.md", "exec"), namespace)
    my_bot_cls = namespace["MyBot"]
    bot = my_bot_cls(  # type: ignore[operator]
        sim_app.app_id,
        app_secret=sim_app.app_secret,
        encrypt_key=sim_app.encrypt_key,
        verification_token=sim_app.verification_token,
        host=fake_openapi.url,
    )
    payload = payloads.text_message(sim_app, "你好 README")
    message_id = payload["event"]["message"]["message_id"]
    fake_openapi.add_message(message_id, sim_app.app_id, "text", {"text": "你好 README"})
    envelope = _envelope(sim_app, payload, "event", "req-readme-1")
    try:
        assert bot.process_message(envelope) is None
        calls = fake_openapi.wait_for_calls(f"/messages/{message_id}/reply", count=2)
    finally:
        bot.close()
    kinds = [(c.json["msg_type"], json.loads(c.json["content"])) for c in calls]
    assert kinds[0] == ("text", {"text": "reply: 你好 README"})
    assert kinds[1][0] == "interactive"
    elements = kinds[1][1]["elements"]
    assert elements[0]["text"]["content"] == "reply"
    assert elements[1] == {"tag": "hr"}
    assert elements[2]["text"]["content"] == "你好 README"
    assert elements[3]["tag"] == "note"


async def test_readme_decorator_handlers_answer_text_bot_added_card_action_and_app_ticket(
    fake_openapi, sim_app
):
    """The "Handlers by decorator" example, unchanged but for the ``Bot(...)`` arguments (the README's
    placeholders become the simulator app's credentials and the fake OpenAPI's host), in the namespace
    ``from wslarkbot import *`` gives (the first example's import)."""
    title = "Handlers by decorator, sync or async"
    tickets: list[Any] = []

    class ReadmeBot(wslarkbot.Bot):
        def __init__(self, app_id: str, **placeholders: str) -> None:
            assert app_id == "cli_xxx"
            assert set(placeholders) == {"app_secret", "encrypt_key", "verification_token"}
            super().__init__(
                sim_app.app_id,
                app_secret=sim_app.app_secret,
                encrypt_key=sim_app.encrypt_key,
                verification_token=sim_app.verification_token,
                host=fake_openapi.url,
            )

        def on_v1(self, event_type: str):  # records the calls of the README's ``ticket`` (body ``...``)
            register = super().on_v1(event_type)

            def spy(func):
                @functools.wraps(func)
                def recorded(event):
                    tickets.append(event)
                    return func(event)

                register(recorded)
                return func

            return spy

    namespace: dict[str, Any] = {name: getattr(wslarkbot, name) for name in wslarkbot.__all__}
    namespace["Bot"] = ReadmeBot
    exec(compile(_first_python_block(_subsection(title), title), "README.md", "exec"), namespace)
    bot = namespace["bot"]
    assert isinstance(bot, ReadmeBot)
    try:
        # text message -> the async handler replies through bot.async_api
        text = payloads.text_message(sim_app, "你好 decorators")
        message_id = text["event"]["message"]["message_id"]
        fake_openapi.add_message(message_id, sim_app.app_id, "text", {"text": "你好 decorators"})
        assert await bot.aprocess_message(_envelope(sim_app, text, "event", "req-readme-text")) is None
        (reply,) = fake_openapi.wait_for_calls(f"/messages/{message_id}/reply", count=1)
        assert reply.json["msg_type"] == "text"
        assert json.loads(reply.json["content"]) == {"text": "echo: 你好 decorators"}

        # the bot added to a chat -> the sync handler sends through bot.api to that chat
        added = payloads.event_v2(sim_app, "im.chat.member.bot.added_v1", {"chat_id": "oc_readme"})
        assert bot.process_message(_envelope(sim_app, added, "event", "req-readme-added")) is None
        (sent,) = fake_openapi.wait_for_calls(lambda c: c.path.endswith("/im/v1/messages"), count=1)
        assert sent.query["receive_id_type"] == "chat_id"
        assert sent.json["receive_id"] == "oc_readme"
        assert json.loads(sent.json["content"]) == {"text": "hello!"}

        # a card action -> the handler's return value is the callback response
        click = payloads.card_action(sim_app, {"action": "approve"})
        response = bot.process_message(_envelope(sim_app, click, "callback", "req-readme-click"))
        assert response == {"toast": {"type": "success", "content": "done"}}
        assert await bot.aprocess_message(
            _envelope(sim_app, payloads.card_action(sim_app), "callback", "req-readme-click-2")
        ) == {"toast": {"type": "success", "content": "done"}}

        # the v1 app_ticket -> the v1 handler runs (an event: nothing goes back to Feishu)
        ticket = payloads.app_ticket(sim_app, "ticket-readme")
        assert bot.process_message(_envelope(sim_app, ticket, "event", "req-readme-ticket")) is None
        assert [(e.event_type, e.event["app_ticket"]) for e in tickets] == [("app_ticket", "ticket-readme")]
    finally:
        await bot.aclose()


def test_readme_asyncio_program_runs_until_the_client_is_stopped(monkeypatch, sim_app):
    """The "asyncio programs" example, unchanged, against a local relay: ``await client.run()`` serves until
    ``client.stop()`` (called here once the client is connected) and then returns without an error."""
    title = "asyncio programs"
    seen: dict[str, Any] = {}

    with RelayThread(relay_test_config()) as relay:

        class ReadmeClient(wslarkbot.AsyncClient):
            def __init__(self, *bots: Any, server: str) -> None:
                assert server == "relay.example.com"
                super().__init__(*bots, server=f"127.0.0.1:{relay.port}")

            async def run(self) -> None:
                async def stop_when_connected() -> None:
                    seen["ready"] = await self.wait_ready(10)
                    await self.stop()

                stopper = asyncio.ensure_future(stop_when_connected())
                try:
                    await super().run()
                finally:
                    await stopper
                seen["stopped"] = True

        monkeypatch.setattr(wslarkbot, "AsyncClient", ReadmeClient)  # what the block's import gets
        bot = wslarkbot.Bot(
            sim_app.app_id,
            app_secret=sim_app.app_secret,
            verification_token=sim_app.verification_token,
            encrypt_key=sim_app.encrypt_key,
        )
        try:
            exec(compile(_first_python_block(_subsection(title), title), "README.md", "exec"), {"bot": bot})
        finally:
            bot.close()
    assert seen == {"ready": True, "stopped": True}


def test_readme_offline_testing_example_runs_as_written() -> None:
    """The "Testing bots offline with the simulator" example, unchanged: simulated Feishu, real relay,
    the bot behind a real client, the fake OpenAPI; its own asserts are the test."""
    code = _first_python_block(_section("Testing bots offline with the simulator"), "Testing bots offline")
    exec(compile(code, "README.md", "exec"), {})


def test_every_helper_in_the_readme_table_exists_on_both_openapi_clients():
    from wslarkbot.openapi import AsyncOpenAPIClient, OpenAPIClient

    table = _subsection("Calling Feishu: files, messages, chats, users")
    names = set()
    for row in table.splitlines():
        if row.startswith("| `") and not row.startswith("| `bot."):
            # "→ `image_key`" names a result and "(`for` / `async for`)" a remark, not methods
            cell = re.sub(r"\(`[^)]*\)", "", row.split("|")[1].split("→")[0])
            names |= set(re.findall(r"`(\w+)(?:\(|`)", cell))
    assert {"upload_image", "download_resource", "urgent", "paginate", "for_tenant"} <= names
    for name in sorted(names):
        assert callable(getattr(OpenAPIClient, name, None)), name
        assert callable(getattr(AsyncOpenAPIClient, name, None)), name
