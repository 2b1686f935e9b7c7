"""End to end: the official lark-oapi 1.7.5 ``ws.Client``, unmodified, against the long-connection gateway.

Each bot runs in its own subprocess (lark-oapi's ``start()`` blocks forever on a module-level loop) and
prints what its handlers receive as ``BOT {json}`` lines; the gateway is a real aiohttp server on port 0 and
Feishu is played by real HTTP POSTs signed and encrypted with :mod:`wslarkbot.crypto` (protocol.md §2, §3).
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import pytest
import websockets
from aiohttp import web

from wslarkbot.crypto import encrypt, event_signature
from wslarkbot.relay.longconn import (
    GATEWAY_KEY,
    ClientRegistry,
    Gateway,
    GatewayApp,
    GatewayConfig,
    hash_secret,
)
from wslarkbot.relay.longconn.frame import decode_frame
from wslarkbot.relay.routes import to_response

pytestmark = pytest.mark.timeout(150)

APP_ID = "cli_gateway_test"
SECRET = "s3cret-app-secret"
ENCRYPT_KEY = "test encrypt key"
TOKEN = "verification-token-1"
SAMPLES = pathlib.Path(__file__).resolve().parent / "samples"
WAIT = 45.0  # upper bound for a subprocess: importing lark_oapi alone takes ~10 s on a slow CI box

BOT_SCRIPT = r"""
import json, sys, threading
import lark_oapi as lark
from lark_oapi.event.callback.model.p2_card_action_trigger import P2CardActionTriggerResponse

domain, app_id, secret, level, block = sys.argv[1:6]

def out(kind, **kw):
    print("BOT " + json.dumps({"kind": kind, **kw}), flush=True)

def on_message(data):
    content = json.loads(data.event.message.content)
    out("message", message_id=data.event.message.message_id, text_len=len(content.get("text", "")),
        text_head=content.get("text", "")[:20])
    if block == "block":  # never answer: the test SIGKILLs this bot while the relay waits
        threading.Event().wait()

def on_card(data):
    out("card", value=data.event.action.value)
    return P2CardActionTriggerResponse({"toast": {"type": "success", "content": "clicked!"}})

handler = (lark.EventDispatcherHandler.builder("", "")
           .register_p2_im_message_receive_v1(on_message)
           .register_p2_card_action_trigger(on_card)
           .build())
client = lark.ws.Client(app_id, secret, event_handler=handler, domain=domain,
                        log_level=getattr(lark.LogLevel, level))
client.start()
"""


APP_KEYS = ("max_connections", "delivery", "replay", "replay_size", "replay_ttl")


def _config(**overrides: Any) -> GatewayConfig:
    app_kw = {k: overrides.pop(k) for k in APP_KEYS if k in overrides}
    app = GatewayApp(
        app_id=APP_ID,
        app_secret_sha256=hash_secret(SECRET),
        encrypt_key=ENCRYPT_KEY,
        verification_token=TOKEN,
        **app_kw,
    )
    knobs: dict[str, Any] = {"ping_interval": 1, "reconnect_interval": 1, "reconnect_nonce": 0}
    knobs.update(overrides)
    return GatewayConfig(apps={APP_ID: app}, **knobs)


@dataclass
class Relay:
    """A stand-in for the relay: the gateway's routes plus ``/hook/{app_id}`` as the relay will wire it."""

    gateway: Gateway
    runner: web.AppRunner
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def start_relay(config: GatewayConfig, port: int = 0, hub: ClientRegistry | None = None) -> Relay:
    gateway = Gateway(config, clients=hub)
    app = web.Application()
    gateway.install(app)

    async def hook(request: web.Request) -> web.StreamResponse:
        """What the relay's webhook handler does once it has read and size-checked the body."""
        app_id, raw = request.match_info["app_id"], await request.read()
        found = request.app.get(GATEWAY_KEY)
        if found is not None and found.serves(app_id):
            return to_response(await found.webhook_answer(app_id, request.headers, raw))
        raise web.HTTPNotFound()

    app.router.add_post("/hook/{app_id}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return Relay(gateway, runner, runner.addresses[0][1])


@dataclass
class Bot:
    """One lark-oapi bot subprocess; its stdout lines are collected by a reader task."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _new: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            self._new.set()
        self._new.set()

    async def wait_line(self, predicate: Callable[[str], bool], timeout: float = WAIT, start: int = 0) -> str:
        """The first line from index ``start`` matching ``predicate``; waits on new output, not a clock."""

        async def scan() -> str:
            index = start
            while True:
                while index < len(self.lines):
                    if predicate(self.lines[index]):
                        return self.lines[index]
                    index += 1
                if self.proc.returncode is not None and self._reader is not None and self._reader.done():
                    raise AssertionError("bot exited:\n" + "\n".join(self.lines[-30:]))
                self._new.clear()
                await self._new.wait()

        try:
            return await asyncio.wait_for(scan(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("line not seen; bot output:\n" + "\n".join(self.lines[-30:])) from None

    async def event(self, kind: str, start: int = 0) -> dict[str, Any]:
        line = await self.wait_line(
            lambda s: s.startswith("BOT ") and json.loads(s[4:])["kind"] == kind, start=start
        )
        return json.loads(line[4:])

    async def exit_code(self, timeout: float = WAIT) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout)
        return code

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        if self._reader is not None:
            await self._reader


@pytest.fixture(name="bots")
async def bots_fixture(tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    script = tmp_path / "bot.py"
    script.write_text(BOT_SCRIPT)
    started: list[Bot] = []
    env = {**os.environ, "NO_PROXY": "*", "no_proxy": "*", "PYTHONWARNINGS": "ignore"}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(name, None)

    async def start(domain: str, secret: str = SECRET, level: str = "INFO", block: bool = False) -> Bot:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-u", str(script), domain, APP_ID, secret, level, "block" if block else "-",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
        bot = Bot(proc)
        bot._reader = asyncio.ensure_future(bot._read())
        started.append(bot)
        return bot

    yield start
    for bot in started:
        await bot.stop()


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    server = await start_relay(_config())
    yield server
    await server.runner.cleanup()


@pytest.fixture(name="http")
async def http_fixture() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _sample(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    payload["header"].update(token=TOKEN, app_id=APP_ID, event_id=uuid.uuid4().hex)
    return payload


def _message(text: str) -> dict[str, Any]:
    payload = _sample("im.message.receive_v1.json")
    payload["event"]["message"]["content"] = json.dumps({"text": text})
    payload["event"]["message"]["message_id"] = "om_" + uuid.uuid4().hex
    return payload


class HasUrl(Protocol):
    @property
    def url(self) -> str: ...


async def push(http: aiohttp.ClientSession, relay: HasUrl, payload: dict[str, Any]) -> tuple[int, Any]:
    """POST ``payload`` the way Feishu does with an Encrypt Key set: encrypted body, sha256 signature."""
    body = json.dumps({"encrypt": encrypt(json.dumps(payload, separators=(",", ":")), ENCRYPT_KEY)}).encode()
    ts, nonce = str(int(time.time())), uuid.uuid4().hex
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "X-Lark-Request-Timestamp": ts,
        "X-Lark-Request-Nonce": nonce,
        "X-Lark-Signature": event_signature(ts, nonce, ENCRYPT_KEY, body),
    }
    async with http.post(f"{relay.url}/hook/{APP_ID}", data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


# --- tests ----------------------------------------------------------------------------------------


async def test_event_reaches_lark_oapi_handler_and_feishu_gets_200(
    relay: Relay, bots: Any, http: Any
) -> None:
    bot = await bots(relay.url)
    await relay.gateway.clients.wait_for_connections(APP_ID, 1, WAIT)
    payload = _message("hello gateway")
    status, body = await push(http, relay, payload)
    assert (status, body) == (200, {"msg": "success"})
    assert relay.gateway.counts() == {APP_ID: 1}
    got = await bot.event("message")
    assert got["message_id"] == payload["event"]["message"]["message_id"]
    assert got["text_head"] == "hello gateway"


async def test_card_callback_response_comes_back_as_webhook_response(
    relay: Relay, bots: Any, http: Any
) -> None:
    bot = await bots(relay.url)
    await relay.gateway.clients.wait_for_connections(APP_ID, 1, WAIT)
    payload = _sample("card.action.trigger.json")
    status, body = await push(http, relay, payload)
    assert status == 200
    assert body["toast"] == {"type": "success", "content": "clicked!"}
    assert (await bot.event("card"))["value"] == payload["event"]["action"]["value"]


async def test_large_event_is_fragmented_and_reassembled_by_the_client(bots: Any, http: Any) -> None:
    relay = await start_relay(_config(fragment_bytes=16 * 1024))
    try:
        bot = await bots(relay.url)
        await relay.gateway.clients.wait_for_connections(APP_ID, 1, WAIT)
        text = "".join(random.choice("abcdefghij") for _ in range(100 * 1024))
        status, body = await push(http, relay, _message(text))
        assert (status, body) == (200, {"msg": "success"})
        got = await bot.event("message")
        assert (got["text_len"], got["text_head"]) == (len(text), text[:20])
    finally:
        await relay.runner.cleanup()


async def test_ping_is_answered_with_pong_carrying_client_config(relay: Relay, bots: Any) -> None:
    bot = await bots(relay.url, level="DEBUG")
    await bot.wait_line(lambda s: "receive pong" in s)


async def test_client_reconnects_after_gateway_restart_and_gets_next_event(bots: Any, http: Any) -> None:
    relay = await start_relay(_config())
    bot = await bots(relay.url)
    await relay.gateway.clients.wait_for_connections(APP_ID, 1, WAIT)
    port = relay.port
    await relay.runner.cleanup()
    relay = await start_relay(_config(), port=port)
    try:
        await relay.gateway.clients.wait_for_connections(APP_ID, 1, WAIT)
        payload = _message("after restart")
        status, _ = await push(http, relay, payload)
        assert status == 200
        assert (await bot.event("message"))["text_head"] == "after restart"
    finally:
        await relay.runner.cleanup()


async def test_wrong_app_secret_is_refused_and_the_sdk_stops(relay: Relay, bots: Any) -> None:
    bot = await bots(relay.url, secret="not-the-secret")
    assert await bot.exit_code() != 0
    assert any("ClientException" in line for line in bot.lines), bot.lines[-20:]
    assert relay.gateway.clients.connections(APP_ID) == []


async def test_connection_limit_refuses_the_extra_client_fatally(bots: Any) -> None:
    relay = await start_relay(_config(max_connections=1))
    try:
        first = await bots(relay.url)
        await relay.gateway.clients.wait_for_connections(APP_ID, 1, WAIT)
        second = await bots(relay.url)
        assert await second.exit_code() != 0
        assert any("exceeded connection limit" in line for line in second.lines), second.lines[-20:]
        assert len(relay.gateway.clients.connections(APP_ID)) == 1
        assert first.proc.returncode is None
    finally:
        await relay.runner.cleanup()


async def test_no_client_connected_answers_503_with_retry_after(relay: Relay, http: Any) -> None:
    body = json.dumps({"encrypt": encrypt(json.dumps(_message("x")), ENCRYPT_KEY)}).encode()
    ts, nonce = "1700000000", "n"
    headers = {
        "X-Lark-Request-Timestamp": ts,
        "X-Lark-Request-Nonce": nonce,
        "X-Lark-Signature": event_signature(ts, nonce, ENCRYPT_KEY, body),
    }
    async with http.post(f"{relay.url}/hook/{APP_ID}", data=body, headers=headers) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"


class _FirstChoice(random.Random):
    """Picks the oldest connection, so the test knows which client gets the event first."""

    def choice(self, seq: Any) -> Any:
        return seq[0]


async def _raw_client(http: aiohttp.ClientSession, relay: Relay) -> Any:
    async with http.post(
        f"{relay.url}/callback/ws/endpoint", json={"AppID": APP_ID, "AppSecret": SECRET}
    ) as r:
        url = (await r.json())["data"]["URL"]
    return await websockets.connect(url, proxy=None)


async def test_event_fails_over_when_the_chosen_client_dies(bots: Any, http: Any) -> None:
    config = _config()
    relay = await start_relay(config, hub=ClientRegistry(config, rng=_FirstChoice()))
    try:
        mute = await _raw_client(http, relay)  # oldest: chosen first; dies without answering
        await relay.gateway.clients.wait_for_connections(APP_ID, 1, WAIT)
        bot = await bots(relay.url)
        await relay.gateway.clients.wait_for_connections(APP_ID, 2, WAIT)

        async def die_on_first_event() -> str | None:
            frame = decode_frame(await mute.recv())
            await mute.close()
            return frame.header("message_id")

        dying = asyncio.ensure_future(die_on_first_event())
        status, body = await push(http, relay, _message("failover"))
        assert (status, body) == (200, {"msg": "success"})
        assert await asyncio.wait_for(dying, WAIT)
        assert (await bot.event("message"))["text_head"] == "failover"
    finally:
        await relay.runner.cleanup()


async def test_handshake_refusals_carry_feishu_headers(relay: Relay, http: Any) -> None:
    """A forged ticket gets 403, which lark-oapi treats as fatal (client.py ``_parse_ws_conn_exception``)."""
    async with http.get(f"{relay.url}/callback/ws/v2?device_id=x&service_id=1&token=forged.sig") as resp:
        assert resp.headers["handshake-status"] == "403"
        assert resp.headers["handshake-msg"]
    async with http.post(f"{relay.url}/callback/ws/endpoint", json={"AppID": APP_ID, "AppSecret": "x"}) as r:
        answer = await r.json()
    assert r.status == 200 and answer["code"] not in (0, 1, 1000040343)


async def test_bootstrap_url_follows_the_proxy_headers(relay: Relay, http: Any) -> None:
    """Behind a TLS proxy the SDK must be told ``wss://<public host>``, not the relay's own address."""
    headers = {"X-Forwarded-Proto": "https", "Host": "relay.example.com"}
    body = {"AppID": APP_ID, "AppSecret": SECRET}
    async with http.post(f"{relay.url}/callback/ws/endpoint", json=body, headers=headers) as r:
        answer = await r.json()
    assert answer["code"] == 0
    assert answer["data"]["URL"].startswith("wss://relay.example.com/callback/ws/v2?device_id=")
    assert answer["data"]["ClientConfig"] == relay.gateway.config.client_config()
