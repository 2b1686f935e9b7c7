"""One table of hot-route behaviours, run against both servers (issue 17): the fast path and aiohttp
(``--no-fast-path``) must give the same status, body and headers (but ``Server`` and ``Date``), the same
WebSocket frames and close codes, the same relay log lines (WARNING and above, numbers folded) and the
same ``/status`` counters. A new divergence fails here. Real relays on port 0, real HTTP and WebSocket
clients; a hub that raises on one channel stands in for a bug."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wslarkbot.relay import InMemoryHub, create_app, run_relay
from wslarkbot.relay.buffer import BufferPolicy
from wslarkbot.relay.hub import Event
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.tenants import TenantLimit
from wslarkbot.relay.testing import SIGNED, recv_json, test_config

pytestmark = pytest.mark.timeout(60)

EVENT = {"schema": "2.0", "header": {"event_type": "im.message.receive_v1", "event_id": "e1"}, "event": {}}
CALLBACK = {"schema": "2.0", "header": {"event_type": "card.action.trigger", "event_id": "c1"}, "event": {}}
CHALLENGE = {"encrypt": "opaque"}  # unsigned + encrypted: a url_verification to the relay
HEADERS_COMPARED = ("content-type", "retry-after", "www-authenticate", "upgrade", "allow", "location")
COUNTERS = ("published", "delivered", "undelivered", "buffered", "replies", "acks", "nacks", "timeouts",
            "rejected", "subscribes")  # fmt: skip


class BoomHub(InMemoryHub):
    """The in-memory hub, with a bug on channel ``cli_boom``."""

    async def assign(self, channel: str, request_id: str, body: str, *, bufferable: bool) -> Event:
        if channel == "cli_boom":
            raise RuntimeError("a bug in the hub")
        return await super().assign(channel, request_id, body, bufferable=bufferable)


@dataclass
class Ctx:
    relay: RunningRelay
    http: httpx.AsyncClient

    @property
    def url(self) -> str:
        return self.relay.url

    def ws(self, path: str) -> Any:
        return connect(f"ws://127.0.0.1:{self.relay.port}{path}")

    async def hello(self, path: str) -> ClientConnection:
        ws = await connect(f"ws://127.0.0.1:{self.relay.port}{path}")
        if "proto=2" in path:
            assert (await recv_json(ws))["type"] == "hello"
        return ws


def answer(resp: httpx.Response) -> dict[str, Any]:
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text
    headers = {k: resp.headers[k] for k in HEADERS_COMPARED if k in resp.headers}
    return {"status": resp.status_code, "body": body, "headers": headers}


def post(path: str, **kwargs: Any) -> Callable[[Ctx], Awaitable[Any]]:
    async def run(ctx: Ctx) -> Any:
        return answer(await ctx.http.post(ctx.url + path, **kwargs))

    return run


def get(path: str, **kwargs: Any) -> Callable[[Ctx], Awaitable[Any]]:
    async def run(ctx: Ctx) -> Any:
        return answer(await ctx.http.get(ctx.url + path, **kwargs))

    return run


def request(method: str, path: str, **kwargs: Any) -> Callable[[Ctx], Awaitable[Any]]:
    async def run(ctx: Ctx) -> Any:
        return answer(await ctx.http.request(method, ctx.url + path, **kwargs))

    return run


def upgrade(path: str, **headers: str) -> Callable[[Ctx], Awaitable[Any]]:
    """A WebSocket subscription: refused (status, body, headers) or accepted (the first frame)."""

    async def run(ctx: Ctx) -> Any:
        try:
            async with connect(f"ws://127.0.0.1:{ctx.relay.port}{path}", additional_headers=headers) as ws:
                return {"accepted": json.loads(await asyncio.wait_for(ws.recv(), 3))}
        except InvalidStatus as exc:
            resp = exc.response
            body = json.loads(resp.body) if resp.body else None
            kept = {k: resp.headers[k] for k in HEADERS_COMPARED if k in resp.headers}
            return {"status": resp.status_code, "body": body, "headers": kept}

    return run


def answered_by(
    frame: Callable[[dict[str, Any]], Any],
    body: Any = EVENT,
    path: str = "/hook/cli_a",
    sub: str = "/sub/cli_a?proto=2",
    **kwargs: Any,
) -> Callable[[Ctx], Awaitable[Any]]:
    """A webhook, a subscriber that answers the envelope with ``frame(env)`` (None: nothing)."""

    async def run(ctx: Ctx) -> Any:
        async with await ctx.hello(sub) as ws:
            call = asyncio.ensure_future(ctx.http.post(ctx.url + path, json=body, **kwargs))
            env = json.loads(await asyncio.wait_for(ws.recv(), 3))
            out = frame(env)
            for one in out if isinstance(out, list) else [] if out is None else [out]:
                await ws.send(json.dumps(one))
            result = answer(await call)
            await ws.send("PING")  # anything the relay sent back, up to the PONG
            extra = []
            while (msg := await asyncio.wait_for(ws.recv(), 3)) != "PONG":
                extra.append(json.loads(msg))
            return {**result, "frames": extra}

    return run


def rid(env: dict[str, Any]) -> str:
    return str(env["headers"]["x-request-id"])


def ws_frames(*sent: str | bytes, path: str = "/sub/cli_a?proto=2") -> Callable[[Ctx], Awaitable[Any]]:
    """Frames sent on a subscription; what comes back (up to the PONG, or the close code)."""

    async def run(ctx: Ctx) -> Any:
        async with await ctx.hello(path) as ws:
            got: list[Any] = []
            try:
                for frame in sent:
                    await ws.send(frame)
                await ws.send("PING")
                while (msg := await asyncio.wait_for(ws.recv(), 3)) != "PONG":
                    got.append(json.loads(msg) if isinstance(msg, str) and msg.startswith("{") else msg)
            except ConnectionClosed:
                rcvd = ws.protocol.close_rcvd
                got.append({"closed": rcvd.code if rcvd is not None else None})
            return got

    return run


async def _raw(ctx: Ctx, data: bytes) -> Any:
    """Bytes written to the relay's socket as they are; the status line of what comes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", ctx.relay.port)
    writer.write(data)
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 3)
    writer.close()
    return status.decode().split(" ", 2)[:2]


async def _chunked(ctx: Ctx, path: str) -> Any:
    async def body() -> AsyncIterator[bytes]:
        for part in (b'{"schema":"2.0",', b'"header":{"event_type":"x"}}'):
            yield part

    return answer(await ctx.http.post(ctx.url + path, content=body(), headers=SIGNED))


async def _buffer_full(ctx: Ctx) -> Any:
    first = answer(await ctx.http.post(ctx.url + "/hook/cli_buf1", json=EVENT, headers=SIGNED))
    second = answer(await ctx.http.post(ctx.url + "/hook/cli_buf1", json=EVENT, headers=SIGNED))
    return [first, second]


async def _pending_full(ctx: Ctx) -> Any:
    async with await ctx.hello("/sub/cli_a?proto=2"):
        waiting = asyncio.ensure_future(ctx.http.post(ctx.url + "/hook/cli_a", json=EVENT, headers=SIGNED))
        await asyncio.sleep(0.1)  # let the first one take the only waiting slot (pacing the two posts)
        refused = answer(await ctx.http.post(ctx.url + "/hook/cli_a", json=EVENT, headers=SIGNED))
        return [refused, answer(await waiting)]


async def _subscribers_full(ctx: Ctx) -> Any:
    async with await ctx.hello("/sub/cli_full?proto=2"), await ctx.hello("/sub/cli_full?proto=2"):
        return await upgrade("/sub/cli_full?proto=2")(ctx)


async def _over_the_rate(ctx: Ctx) -> Any:
    return [answer(await ctx.http.post(ctx.url + "/hook/cli_rate", json=EVENT, headers=SIGNED)) for _ in "ab"]


async def _over_tenant_subscribers(ctx: Ctx) -> Any:
    async with await ctx.hello("/sub/cli_small?proto=2"):
        return await upgrade("/sub/cli_small?proto=2")(ctx)


async def _reply_by_http(ctx: Ctx) -> Any:
    async with await ctx.hello("/sub/cli_a") as ws:  # an original client: answers by HTTP POST
        call = asyncio.ensure_future(ctx.http.post(ctx.url + "/hook/cli_a", json=CALLBACK))
        env = json.loads(await asyncio.wait_for(ws.recv(), 3))
        first = answer(await ctx.http.post(f"{ctx.url}/sub/{rid(env)}", json={"toast": {"content": "hi"}}))
        second = answer(await ctx.http.post(f"{ctx.url}/sub/{rid(env)}", json={}))
        return [first, second, answer(await call)]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


CASES: dict[str, Callable[[Ctx], Awaitable[Any]]] = {
    # webhooks refused before anything is published
    "webhook to an unknown route": post("/nothing_here/cli_a", json=EVENT),
    "webhook to a bad channel name": post("/hook/bad*name", json=EVENT),
    "webhook to a bad org name": post("/org_bad*/cli_a", json=EVENT),
    "webhook body not JSON": post("/hook/cli_a", content=b"not json", headers=SIGNED),
    "webhook body not UTF-8": post("/hook/cli_a", content=b'{"a":"\xff"}', headers=SIGNED),
    "webhook body over max_body_bytes": post("/hook/cli_a", content=b"x" * 5000, headers=SIGNED),
    "webhook body nested too deeply": post("/hook/cli_a", content=b"[" * 2000 + b"]" * 2000, headers=SIGNED),
    "webhook body declared over max_body_bytes": lambda ctx: _raw(
        ctx, b"POST /hook/cli_a HTTP/1.1\r\nHost: relay\r\nContent-Length: 99999\r\n\r\n{}"
    ),
    "request line over 8 KiB": lambda ctx: _raw(
        ctx, b"POST /hook/cli_a?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: relay\r\nContent-Length: 2\r\n\r\n{}"
    ),
    "header line over 8 KiB": lambda ctx: _raw(
        ctx,
        b"POST /hook/cli_a HTTP/1.1\r\nHost: relay\r\nX-A: "
        + b"a" * 9000
        + b"\r\nContent-Length: 2\r\n\r\n{}",
    ),
    "webhook without Host": lambda ctx: _raw(
        ctx, b"POST /hook/cli_a HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
    ),
    "webhook with two Host headers": lambda ctx: _raw(
        ctx, b"POST /hook/cli_a HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 2\r\n\r\n{}"
    ),
    # webhooks nobody receives
    "event with no subscriber": post("/hook/cli_nobody", json=EVENT, headers=SIGNED),
    "challenge with no subscriber": post("/hook/cli_nobody", json=CHALLENGE),
    "plaintext callback with no subscriber": post("/hook/cli_nobody", json=CALLBACK),
    "org event with no subscriber": post("/org_acme/cli_a", json=EVENT, headers=SIGNED),
    "event with a bad X-Request-Id": post(
        "/hook/cli_nobody", json=EVENT, headers={**SIGNED, "X-Request-Id": "bad id\x7f"}
    ),
    "chunked event with no subscriber": lambda ctx: _chunked(ctx, "/hook/cli_nobody"),
    "buffered event with no subscriber": post("/hook/cli_buf1", json=EVENT, headers=SIGNED),
    "buffered channel full": _buffer_full,
    "a bug in the hub": post("/hook/cli_boom", json=EVENT, headers=SIGNED),
    # webhooks and their answers
    "event acked": answered_by(lambda env: {"type": "ack", "request_id": rid(env)}, headers=SIGNED),
    "event nacked": answered_by(lambda env: {"type": "nack", "request_id": rid(env)}, headers=SIGNED),
    "event replied": answered_by(
        lambda env: {"type": "reply", "request_id": rid(env), "body": {"x": 1}}, headers=SIGNED
    ),
    "event not answered": answered_by(lambda env: None, headers=SIGNED),
    "event to an original client": answered_by(lambda env: None, sub="/sub/cli_a", headers=SIGNED),
    "challenge replied": answered_by(
        lambda env: {"type": "reply", "request_id": rid(env), "body": {"challenge": "c"}}, body=CHALLENGE
    ),
    "challenge not answered": answered_by(lambda env: None, body=CHALLENGE),
    "callback replied": answered_by(
        lambda env: {"type": "reply", "request_id": rid(env), "body": {"toast": {}}}, body=CALLBACK
    ),
    "callback not answered": answered_by(lambda env: None, body=CALLBACK),
    "event answered twice": answered_by(
        lambda env: [{"type": "ack", "request_id": rid(env)}, {"type": "ack", "request_id": rid(env)}],
        headers=SIGNED,
    ),
    "buffered event acked": answered_by(
        lambda env: {"type": "ack", "request_id": rid(env)},
        path="/hook/cli_buf2",
        sub="/sub/cli_buf2?proto=2",
        headers=SIGNED,
    ),
    "buffered event not answered": answered_by(
        lambda env: None, path="/hook/cli_buf2", sub="/sub/cli_buf2?proto=2", headers=SIGNED
    ),
    "waiting requests full": _pending_full,
    # original clients' replies over HTTP
    "reply for an unknown request": post("/sub/" + "f" * 32, json={"challenge": "x"}),
    "reply with a bad request id": post("/sub/bad*id", json={}),
    "reply with a newline in the request id": post("/sub/abc%0A", json={}),
    "reply that is not JSON": post("/sub/" + "f" * 32, content=b"{nope"),
    "reply by HTTP, then again": _reply_by_http,
    # subscriptions
    "subscription without upgrade": get("/sub/cli_a"),
    "subscription to a bad channel name": upgrade("/sub/bad*name"),
    "subscription to a channel name ending in a newline": upgrade("/sub/cli_a%0A?proto=2"),
    "subscription to too many channels": upgrade("/sub/cli_1,cli_2,cli_3,cli_4,cli_5"),
    "subscription with a bad group": upgrade("/sub/cli_a?proto=2&group=bad*g"),
    "subscription with a bad since": upgrade("/sub/cli_a?proto=2&since=cli_a:nope"),
    "subscription with since for another channel": upgrade("/sub/cli_a?proto=2&since=cli_b:1-0"),
    "org subscription without credentials": upgrade("/sub/org_acme?proto=2"),
    "org subscription with a wrong password": upgrade(
        "/sub/org_acme?proto=2", Authorization=basic("org_acme", "wrong")
    ),
    "org subscription with the password": upgrade(
        "/sub/org_acme?proto=2", Authorization=basic("org_acme", "pw")
    ),
    "subscription to a full channel": _subscribers_full,
    "an event over its tenant's rate": _over_the_rate,
    "a subscription over its tenant's max_subscribers": _over_tenant_subscribers,
    "protocol-2 hello": upgrade("/sub/cli_a,cli_b?proto=2&group=workers"),
    # frames from a subscriber
    "text PING": ws_frames("PING"),
    "a frame that is not JSON": ws_frames("{nope"),
    "a frame of an unknown type": ws_frames(json.dumps({"type": "shout", "request_id": "r1"})),
    "a reply without a body": ws_frames(json.dumps({"type": "reply", "request_id": "r1"})),
    "an ack for an unknown request": ws_frames(json.dumps({"type": "ack", "request_id": "r1"})),
    "a resent ack for an unknown request": ws_frames(
        json.dumps({"type": "ack", "request_id": "r1", "resend": True})
    ),
    "an ack with a bad request id": ws_frames(json.dumps({"type": "ack", "request_id": "bad id"})),
    "a message over max_ws_message_bytes": ws_frames("x" * 3000),
    "a frame nested too deeply": ws_frames("[" * 1500),
    "a binary frame that is JSON": ws_frames(json.dumps({"type": "ack", "request_id": "r1"}).encode()),
    # other routes, served by aiohttp behind both
    "healthz": get("/healthz"),
    "PUT on a webhook route": request("PUT", "/hook/cli_a", json=EVENT),
}


def _fold(text: str) -> str:
    return re.sub(r"\d+", "N", re.sub(r"[0-9a-f]{32}", "ID", text))


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("parity") / "htpasswd"
    path.write_text("org_acme:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    return path


async def observe(name: str, fast: bool, htpasswd: Path, caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    config = test_config(
        fast_path=fast,
        ack_timeout=0.4,
        callback_timeout=0.4,
        challenge_timeout=0.4,
        max_body_bytes=4096,
        max_channels_per_subscription=4,
        max_subscribers_per_channel=2,
        max_pending_replies=1,
        max_ws_message_bytes=2048,
        buffer="cli_buf*",
        buffer_size=1,
        htpasswd=str(htpasswd),
        tenants={"cli_rate": TenantLimit(events_per_second=0.5), "cli_small": TenantLimit(max_subscribers=1)},
    )
    hub = BoomHub(
        max_subscribers_per_channel=config.max_subscribers_per_channel,
        max_pending_replies=config.max_pending_replies,
        buffers=BufferPolicy.parse(config.buffer, size=config.buffer_size, ttl=config.buffer_ttl),
    )
    async with (
        run_relay(config, app=create_app(config, hub=hub)) as relay,
        httpx.AsyncClient(timeout=5) as http,
    ):
        caplog.clear()
        before = (await http.get(f"{relay.url}/status")).json()
        result = await CASES[name](Ctx(relay, http))
        after = (await http.get(f"{relay.url}/status")).json()
    lines = sorted(
        _fold(r.getMessage().split("\n")[0])
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("wslarkbot.relay")
    )
    counters = {k: after[k] - before[k] for k in COUNTERS}
    # request ids and message ids are new in every run
    ids = re.sub(r"\d{13}-\d+", "MSGID", re.sub(r"[0-9a-f]{32}", "ID", json.dumps(result, sort_keys=True)))
    return {"result": json.loads(ids), "log": lines, "counters": counters}


@pytest.mark.parametrize("name", list(CASES))
async def test_both_servers_behave_alike(name: str, htpasswd: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    fast = await observe(name, True, htpasswd, caplog)
    slow = await observe(name, False, htpasswd, caplog)
    assert fast == slow


def test_the_parity_table_covers_at_least_forty_cases() -> None:
    assert len(CASES) >= 40
