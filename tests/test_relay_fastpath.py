"""The relay's fast path (relay/fastpath/): hot routes served by its own protocol, everything else by aiohttp
on the same connection, with the same answers either way. Real relay, real sockets."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from wslarkbot import __version__
from wslarkbot.relay import run_relay
from wslarkbot.relay.app import STATE_KEY
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import SIGNED, recv_json, test_config

EVENT = {"schema": "2.0", "header": {"event_type": "im.message.receive_v1", "event_id": "e"}, "event": {}}
OURS = f"wslarkbot/{__version__}"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    async with run_relay(test_config()) as running:
        yield running


def webhook(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    hdrs = {"Host": "relay", "Content-Type": "application/json", "Content-Length": str(len(body))}
    hdrs.update(headers or {})
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, from a raw socket."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 5)
    return status, headers, body


async def test_webhooks_are_served_by_the_fast_path_and_status_by_aiohttp(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with connect(relay.ws_url("cli_a", proto=None)) as ws:
        hook = await http.post(f"{relay.url}/hook/cli_a", json=EVENT, headers=SIGNED)
        env = await recv_json(ws)
    async with httpx.AsyncClient(timeout=5) as fresh:  # a new connection: a handed-over one stays aiohttp's
        status = await fresh.get(f"{relay.url}/status")
    assert (hook.status_code, hook.headers["server"], hook.json()) == (200, OURS, {"msg": "success"})
    assert env["body"] == EVENT
    assert status.status_code == 200
    assert status.headers["server"].startswith("Python/")


async def test_no_fast_path_serves_everything_with_aiohttp(http: httpx.AsyncClient) -> None:
    async with run_relay(test_config(fast_path=False)) as relay, connect(relay.ws_url("cli_a")) as ws:
        await recv_json(ws)  # hello
        pending = asyncio.create_task(http.post(f"{relay.url}/hook/cli_a", json=EVENT, headers=SIGNED))
        env = await recv_json(ws)
        await ws.send(json.dumps({"type": "ack", "request_id": env["headers"]["x-request-id"]}))
        hook = await asyncio.wait_for(pending, 5)
    assert hook.headers["server"].startswith("Python/")
    assert hook.status_code == 200


async def test_connection_is_handed_to_aiohttp_mid_stream_and_keeps_its_order(relay: RunningRelay) -> None:
    """Pipelined: webhook (fast path), GET /healthz (hand-off), webhook (now aiohttp): answered in order."""
    async with connect(relay.ws_url("cli_a", proto=None)) as ws:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        body = json.dumps(EVENT).encode()
        writer.write(
            webhook("/hook/cli_a", body, SIGNED)
            + b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n"
            + webhook("/hook/cli_a", body, SIGNED)
        )
        first, second, third = [await read_response(reader) for _ in range(3)]
        envelopes = [await recv_json(ws), await recv_json(ws)]
        writer.close()
    assert (first[0], first[1]["server"], first[2]) == (200, OURS, b'{"msg":"success"}')
    assert (second[0], second[2]) == (200, b"ok")
    assert (third[0], json.loads(third[2])) == (200, {"msg": "success"})
    assert third[1]["server"].startswith("Python/")
    assert [e["body"] for e in envelopes] == [EVENT, EVENT]


async def test_pipelined_webhooks_are_answered_in_order(relay: RunningRelay) -> None:
    n = 20
    async with connect(relay.ws_url("cli_a", proto=None)) as ws:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(
            b"".join(
                webhook(
                    "/hook/cli_a",
                    json.dumps({"encrypt": str(i)}).encode(),
                    {**SIGNED, "X-Request-Id": f"r{i}"},
                )
                for i in range(n)
            )
        )
        answers = [await read_response(reader) for _ in range(n)]
        got = [(await recv_json(ws))["headers"]["x-request-id"] for _ in range(n)]
        writer.close()
    assert [a[0] for a in answers] == [200] * n
    assert got == [f"r{i}" for i in range(n)]


async def test_chunked_webhook_is_handed_to_aiohttp_and_delivered(relay: RunningRelay) -> None:
    body = json.dumps(EVENT).encode()
    async with connect(relay.ws_url("cli_a", proto=None)) as ws:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        head = "".join(f"{k}: {v}\r\n" for k, v in SIGNED.items())
        writer.write(
            f"POST /hook/cli_a HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n{head}\r\n".encode()
            + f"{len(body):x}\r\n".encode()
            + body
            + b"\r\n0\r\n\r\n"
        )
        status, _headers, _body = await read_response(reader)
        env = await recv_json(ws)
        writer.close()
    assert status == 200
    assert env["body"] == EVENT


async def test_body_over_the_limit_gets_413_with_a_reason(http: httpx.AsyncClient) -> None:
    async with run_relay(test_config(max_body_bytes=1000)) as relay:
        resp = await http.post(f"{relay.url}/hook/cli_a", content=b"x" * 1001, headers=SIGNED)
    assert resp.status_code == 413
    assert "1000 bytes" in resp.json()["msg"]


async def test_half_closed_client_still_gets_its_answer(relay: RunningRelay) -> None:
    async with connect(relay.ws_url("cli_a", proto=None)) as ws:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(webhook("/hook/cli_a", json.dumps(EVENT).encode(), SIGNED))
        writer.write_eof()
        status, _headers, _ = await read_response(reader)
        await recv_json(ws)
        writer.close()
    assert status == 200


async def test_fragmented_client_message_is_reassembled(relay: RunningRelay, http: httpx.AsyncClient) -> None:
    """A protocol-2 reply sent in three WebSocket fragments answers the challenge."""
    async with connect(relay.ws_url("cli_a")) as ws:
        await recv_json(ws)  # hello
        pending = asyncio.create_task(http.post(f"{relay.url}/hook/cli_a", json={"challenge": "c1"}))
        env = await recv_json(ws)
        text = json.dumps(
            {"type": "reply", "request_id": env["headers"]["x-request-id"], "body": {"challenge": "c1"}}
        )
        await ws.send([text[:10], text[10:20], text[20:]])
        resp = await asyncio.wait_for(pending, 5)
    assert resp.json() == {"challenge": "c1"}


async def test_websocket_ping_is_answered(relay: RunningRelay) -> None:
    async with connect(relay.ws_url("cli_a", proto=None)) as ws:
        latency = await asyncio.wait_for(await ws.ping(b"probe"), 5)
    assert latency >= 0


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (bytes((0x81, 0x05)) + b"hello", 1002),  # unmasked client frame
        (bytes((0xC1, 0x80)) + os.urandom(4), 1002),  # RSV1 set, no extension negotiated
        (bytes((0x81, 0xFF)) + (10**9).to_bytes(8, "big"), 1009),  # announces 1 GB
    ],
    ids=["unmasked", "rsv1", "too-big"],
)
async def test_broken_client_frames_close_the_connection_with_the_rfc_code(
    relay: RunningRelay, frame: bytes, code: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(
        b"GET /sub/cli_a HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101") and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    writer.write(frame)
    close = await asyncio.wait_for(reader.readexactly(4), 5)
    writer.close()
    assert close[0] == 0x88  # FIN + close
    assert int.from_bytes(close[2:4], "big") == code


async def test_slow_subscriber_is_closed_1013_and_the_event_is_not_counted_as_delivered(
    http: httpx.AsyncClient,
) -> None:
    """A subscriber that stops reading: its socket buffers fill, then its queue; it is closed 1013."""
    async with run_relay(test_config(max_subscriber_buffer_bytes=64 * 1024)) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port, limit=1024)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(
            b"GET /sub/cli_slow HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        reader._transport.pause_reading()  # type: ignore[attr-defined]  # stop reading: a stuck bot
        big = {"encrypt": "A" * 50_000}
        statuses: list[int] = []
        for _ in range(200):
            resp = await http.post(f"{relay.url}/hook/cli_slow", json=big, headers=SIGNED)
            statuses.append(resp.status_code)
            if resp.status_code == 503:
                break
        status = (await http.get(f"{relay.url}/status")).json()
        writer.close()
    assert statuses[-1] == 503  # the event that did not fit was not delivered: Feishu retries it
    assert status["delivered"] == statuses.count(200)
    assert status["rejected"] >= 1


REFUSALS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/nothing_here/cli_a", {"json": EVENT}),
    ("POST", "/hook/bad*name", {"json": EVENT}),
    ("POST", "/hook/cli_nobody", {"json": EVENT, "headers": SIGNED}),
    ("POST", "/hook/cli_nobody", {"content": b"not json", "headers": SIGNED}),
    ("POST", "/sub/" + "f" * 32, {"json": {"challenge": "x"}}),
    ("POST", "/sub/bad*id", {"json": {}}),
    ("GET", "/sub/cli_a", {}),
    ("GET", "/sub/bad*name", {}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), REFUSALS, ids=[f"{m} {p}" for m, p, _ in REFUSALS])
async def test_fast_path_refuses_bad_requests_exactly_as_aiohttp_does(
    http: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    answers = []
    for fast in (True, False):
        async with run_relay(test_config(fast_path=fast)) as relay:
            resp = await http.request(method, relay.url + path, **kwargs)
            answers.append((resp.status_code, resp.json(), resp.headers.get("retry-after")))
    assert answers[0] == answers[1]
    assert 400 <= answers[0][0] < 600


async def test_subscription_refusal_on_a_fast_connection_keeps_it_usable(relay: RunningRelay) -> None:
    """400 for a bad channel list on a WebSocket upgrade, then the same connection posts a webhook."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(
        b"GET /sub/bad*name HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    refused = await read_response(reader)
    writer.write(webhook("/hook/cli_nobody", json.dumps(EVENT).encode(), SIGNED))
    after = await read_response(reader)
    writer.close()
    assert (refused[0], refused[1]["server"]) == (400, OURS)
    assert after[0] == 503


async def test_closing_the_relay_closes_fast_path_websockets_with_1012() -> None:
    async with run_relay(test_config()) as relay:
        ws = await connect(relay.ws_url("cli_a", proto=None))
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1012


async def test_thousands_of_pipelined_requests_in_one_write_are_all_answered(relay: RunningRelay) -> None:
    """Answered during their eager first step, pipelined requests are taken in a loop, not by recursion."""
    n = 3000
    async with connect(relay.ws_url("cli_a", proto=None)) as ws:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"".join(webhook("/hook/cli_a", b'{"encrypt":"%d"}' % i, SIGNED) for i in range(n)))
        statuses = [(await read_response(reader))[0] for _ in range(n)]
        bodies = [(await recv_json(ws))["body"] for _ in range(n)]
        writer.close()
    assert statuses == [200] * n
    assert bodies == [{"encrypt": str(i)} for i in range(n)]


async def test_a_client_that_does_not_read_its_answers_is_paused_and_then_gets_every_one(
    relay: RunningRelay,
) -> None:
    """Pipelining without reading: the relay stops reading the requests once its answers pile up (so its
    memory stays bounded), and every request is answered once the client reads."""
    batch = webhook("/hook/cli_nobody", b"{}", SIGNED) * 500
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: answers back up soon
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", relay.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    sent = 0
    blocked = False
    while sent < 1_000_000:
        writer.write(batch)
        sent += 500
        try:
            await asyncio.wait_for(writer.drain(), 0.5)
        except asyncio.TimeoutError:
            blocked = True  # the relay stopped reading: the socket buffers between us are full
            break
    statuses = collections.Counter()
    for _ in range(sent):
        statuses[(await read_response(reader))[0]] += 1
    writer.close()
    assert blocked
    assert statuses == {503: sent}  # nobody subscribed: each answered honestly, none dropped


async def read_server_frame(reader: asyncio.StreamReader) -> bytes:
    """The payload of one unmasked, unfragmented frame from the relay."""
    header = await asyncio.wait_for(reader.readexactly(2), 5)
    assert header[0] == 0x81, header  # FIN + text
    n = header[1] & 0x7F
    if n == 126:
        n = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
    elif n == 127:
        n = int.from_bytes(await asyncio.wait_for(reader.readexactly(8), 5), "big")
    return await asyncio.wait_for(reader.readexactly(n), 5)


async def test_subscriber_that_stops_reading_then_reads_again_gets_every_event_in_order(
    http: httpx.AsyncClient,
) -> None:
    """Frames are written straight to the socket while it takes them, queued while it is backed up, and
    sent from the queue when it drains: none lost, none reordered (also those published while queued)."""
    async with run_relay(test_config(max_subscriber_buffer_bytes=32 * 1024 * 1024)) as relay:
        # Default socket buffers (a tiny SO_RCVBUF would make reading everything back take minutes).
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port, limit=1 << 20)
        writer.write(
            b"GET /sub/cli_pause HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        reader._transport.pause_reading()  # type: ignore[attr-defined]  # stop reading for a while
        (sub,) = relay.app[STATE_KEY].hub.subscribers()
        sent = 0
        queued_while_publishing = False
        while sent < 400 and not queued_while_publishing:
            body = {"encrypt": "A" * 100_000, "i": sent}
            resp = await http.post(f"{relay.url}/hook/cli_pause", json=body, headers=SIGNED)
            assert resp.status_code == 200, resp.text
            sent += 1
            queued_while_publishing = queued_while_publishing or sub.buffered_bytes > 0
        # More published while frames wait in the queue: they must come after those.
        for _ in range(3):
            resp = await http.post(
                f"{relay.url}/hook/cli_pause", json={"encrypt": "B", "i": sent}, headers=SIGNED
            )
            assert resp.status_code == 200
            sent += 1
        reader._transport.resume_reading()  # type: ignore[attr-defined]
        got = [json.loads(await read_server_frame(reader))["body"]["i"] for _ in range(sent)]
        writer.close()
    assert queued_while_publishing  # the socket did back up: the queue was used
    assert got == list(range(sent))


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "aiohttp"])
async def test_a_client_that_pings_and_never_reads_is_not_read_either(fast: bool) -> None:
    """Issue 19: pongs nobody reads must not pile up in the relay; it stops reading such a peer, so the
    peer's own sends block (a socket timeout here) instead of the relay's memory growing."""

    from fault_harness import raw_subscribe

    async with run_relay(test_config(fast_path=fast)) as relay:
        sock = await asyncio.to_thread(raw_subscribe, relay.port, "cli_pings")
        ping = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"\0" * 125  # masked with a zero key
        chunk = ping * 8192  # ~1 MiB of pings
        sock.settimeout(3.0)

        def flood() -> int:
            sent = 0
            try:
                while sent < 256 * len(chunk):  # at most 256 MiB: ends by itself either way
                    sock.sendall(chunk)
                    sent += len(chunk)
            except TimeoutError:
                return sent
            return sent

        try:
            sent = await asyncio.to_thread(flood)
        finally:
            sock.close()
    assert sent < 64 * len(chunk), f"the relay kept reading {sent} bytes of pings whose pongs nobody read"
