"""The README tells the truth: its public-API list is the package's, and its first example runs as written."""

from __future__ import annotations

import json
import pathlib
import re
import time

import wslarkbot
from wslarkbot.sim import payloads
from wslarkbot.sim.protocol import build_request

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


def _first_bot_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", _section("Your first bot"), re.S)
    assert blocks, "README has no python example under 'Your first bot'"
    return blocks[0]


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
    req = build_request(sim_app, payload, kind="event", timestamp=str(int(time.time())), nonce="n0nce",
                        request_id="req-readme-1")
    envelope = {
        "headers": {k.lower(): v for k, v in req.headers.items()},
        "body": json.loads(req.body),
        "raw_body": req.body.decode("utf-8"),
    }
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
