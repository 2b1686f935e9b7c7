"""No oracle through the relay's ordinary path (issue 17): a Bot behind a client rejects unsigned bad
bodies of every kind, and whoever posted them gets one and the same answer, at once. Real relay, real
client, real sockets."""

from __future__ import annotations

import random

import httpx
import pytest

from test_longconn_webhook import _unsigned_bad_bodies
from wslarkbot import AsyncClient, Bot
from wslarkbot.relay import run_relay
from wslarkbot.relay.publish import NACKED
from wslarkbot.relay.testing import test_config

KEY, TOKEN = "ek", "vt"

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "aiohttp"])
async def test_unsigned_bad_bodies_to_a_bot_are_all_answered_alike_whatever_failed(fast_path: bool) -> None:
    bot = Bot("cli_a", app_secret="s", verification_token=TOKEN, encrypt_key=KEY)
    # challenge_timeout far beyond the test: an answer can only come from the bot's nack
    async with run_relay(test_config(fast_path=fast_path, challenge_timeout=20.0)) as relay:
        client = AsyncClient(bot, server=f"127.0.0.1:{relay.port}", protocol="http")
        async with client, httpx.AsyncClient(timeout=10) as http:
            assert await client.wait_ready(10)
            rng = random.Random(18)
            seen: dict[str, set[tuple[int, bytes, tuple[tuple[str, str], ...]]]] = {}
            for _ in range(20):
                for kind, body in _unsigned_bad_bodies(rng).items():
                    resp = await http.post(
                        f"{relay.url}/hook/cli_a", content=body, headers={"Content-Type": "application/json"}
                    )
                    headers = tuple(
                        sorted((k, v) for k, v in resp.headers.items() if k not in ("date", "server"))
                    )
                    seen.setdefault(kind, set()).add((resp.status_code, resp.content, headers))
        assert client.status.rejected == 100
    answers = set().union(*seen.values())
    assert len(answers) == 1, seen
    status, body, _headers = next(iter(answers))
    assert (status, body) == (NACKED.status, NACKED.body)
