"""Compatibility with the original protocol, both ways.

* An ORIGINAL client (a test double written like the original websocket-client loop) against our relay.
* Our client against an ORIGINAL-style relay (nchan: no hello, replies by ``POST /sub/<request_id>``).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import WSMsgType, web
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from wslarkbot import wire
from wslarkbot.bot import Bot
from wslarkbot.client import AsyncClient
from wslarkbot.relay.runner import RunningRelay, run_relay
from wslarkbot.relay.testing import test_config as relay_test_config
from wslarkbot.sim import payloads
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.feishu import FeishuSimulator
from wslarkbot.sim.protocol import build_request

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


class OriginalRelay:
    """Just enough of nginx+nchan: ``GET /sub/<ch>`` WebSocket (no hello; frames published with
    :meth:`publish`), ``POST /sub/<request_id>`` recorded; frames a client sends are recorded too."""

    def __init__(self) -> None:
        self.posted: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.client_frames: list[str] = []
        self.subscribed = asyncio.Event()
        self._sockets: list[web.WebSocketResponse] = []
        self.app = web.Application()
        self.app.router.add_get("/sub/{ch}", self._sub)
        self.app.router.add_post("/sub/{rid}", self._post)

    async def _sub(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        self.subscribed.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.client_frames.append(msg.data)
        return ws

    async def _post(self, request: web.Request) -> web.Response:
        await self.posted.put((request.match_info["rid"], await request.json()))
        return web.Response(status=201)

    async def publish(self, text: str) -> None:
        for ws in self._sockets:
            await ws.send_str(text)


async def test_our_client_falls_back_to_post_replies_without_acks_on_an_original_relay() -> None:
    app = SimApp.random()
    bot = Bot(app.app_id, app.app_secret, app.verification_token, app.encrypt_key)
    events: list[Any] = []
    bot.on_text(events.append)
    fake = OriginalRelay()
    runner = web.AppRunner(fake.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with AsyncClient(bot, server=f"127.0.0.1:{port}") as client:
            await asyncio.wait_for(fake.subscribed.wait(), WAIT)
            for rid, payload, kind in (
                ("rid-event", payloads.text_message(app, "hi"), "event"),
                ("rid-challenge", payloads.url_verification(app, "c-42"), "url_verification"),
            ):
                req = build_request(
                    app, payload, kind=kind, timestamp="1700000000", nonce="n", request_id=rid
                )
                env = wire.Envelope.from_request(
                    req.headers, req.body, app_id=app.app_id, org_id="hook", request_id=rid
                )
                # an original relay sent only headers and body
                await fake.publish(json.dumps({"headers": env.headers, "body": env.body}))
            posted = await asyncio.wait_for(fake.posted.get(), WAIT)
            assert posted == ("rid-challenge", {"challenge": "c-42"})
            ok = await asyncio.to_thread(client.status.wait_for, lambda s: s.received >= 2, WAIT)
            assert ok and client.status.protocol == 1
    finally:
        await runner.cleanup()
    assert fake.posted.empty(), "nothing POSTed for the event"
    assert fake.client_frames == [], "no ack or reply frames (nchan would publish them to every subscriber)"
    assert len(events) == 1
