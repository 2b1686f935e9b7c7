"""Compatibility with the original protocol: an ORIGINAL client (a test double written like the original
websocket-client loop) against our relay.

The other direction, our client against an original relay, runs against the real nginx + nchan config
(deploy/nchan) in tests/test_e2e_nchan.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from wslarkbot.bot import Bot
from wslarkbot.relay.runner import RunningRelay, run_relay
from wslarkbot.relay.testing import test_config as relay_test_config
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.feishu import FeishuSimulator

WAIT = 5.0


def original_client_loop(ws_url: str, http_base: str, bot: Bot, connected: threading.Event) -> None:
    """The original client, reduced to its protocol: every frame is an envelope; answers are POSTed.

    Like the original (websocket-client ``run_forever`` + ``on_message``), it reads only ``headers`` and
    ``body`` and ignores fields it does not know; it sends nothing on the socket and never acks.
    """
    with sync_connect(ws_url) as ws, httpx.Client(trust_env=False) as http:
        connected.set()
        try:
            for frame in ws:
                message = json.loads(frame)
                result = bot.process_message({"headers": message["headers"], "body": message["body"]})
                if result is not None:
                    request_id = message["headers"]["x-request-id"]
                    http.post(f"{http_base}/sub/{request_id}", json=result)
        except ConnectionClosed:
            pass


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    async with run_relay(relay_test_config(challenge_timeout=0.9)) as r:
        yield r


async def test_original_client_gets_the_challenge_answered_through_our_relay(relay: RunningRelay) -> None:
    app = SimApp.random()
    bot = Bot(app.app_id, app.app_secret, app.verification_token, app.encrypt_key)
    connected = threading.Event()
    thread = threading.Thread(
        target=original_client_loop, args=(relay.ws_url(app.app_id, proto=None), relay.url, bot, connected)
    )
    thread.start()
    try:
        # the relay registers a subscription before it completes the WebSocket handshake
        assert await asyncio.to_thread(connected.wait, WAIT)
        async with FeishuSimulator(app, event_url=f"{relay.url}/hook/{app.app_id}") as sim:
            result = await sim.url_verification()
        assert result.ok, result.error
        assert result.elapsed < 1.0
    finally:
        await relay.stop()  # closes the socket; the double's loop ends
        await asyncio.to_thread(thread.join, WAIT)
    assert not thread.is_alive()
