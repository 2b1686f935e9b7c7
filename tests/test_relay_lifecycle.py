"""Relay lifecycle: /status, /healthz, heartbeats, TCP_NODELAY, graceful stop, restart, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from aiohttp import web
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from wslarkbot.cli import main
from wslarkbot.relay import RelayThread, create_app, run_relay
from wslarkbot.relay.config import env_name, option_fields
from wslarkbot.relay.runner import start_relay
from wslarkbot.relay.testing import SIGNED, recv_json, test_config

EVENT = {"schema": "2.0", "header": {"event_type": "im.message.receive_v1", "event_id": "e"}, "event": {}}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def test_healthz_answers_ok(http: httpx.AsyncClient) -> None:
    async with run_relay(test_config()) as relay:
        resp = await http.get(f"{relay.url}/healthz")
    assert resp.status_code == 200 and resp.text == "ok"


async def test_status_counts_published_delivered_replies_acks_timeouts_rejected(
    http: httpx.AsyncClient,
) -> None:
    async with run_relay(test_config(challenge_timeout=0.2)) as relay, connect(relay.ws_url("cli_a")) as ws:
        await recv_json(ws)  # hello
        # one ack
        pending = asyncio.ensure_future(http.post(f"{relay.url}/hook/cli_a", json=EVENT, headers=SIGNED))
        env = await recv_json(ws)
        await ws.send(json.dumps({"type": "ack", "request_id": env["headers"]["x-request-id"]}))
        await pending
        # one reply
        pending = asyncio.ensure_future(http.post(f"{relay.url}/hook/cli_a", json={"challenge": "c"}))
        env = await recv_json(ws)
        await ws.send(json.dumps({"type": "reply", "request_id": env["headers"]["x-request-id"], "body": {}}))
        await pending
        # one timeout, one undelivered, one rejected
        await http.post(f"{relay.url}/hook/cli_a", json={"challenge": "late"})
        await recv_json(ws)
        await http.post(f"{relay.url}/hook/cli_nobody", json=EVENT, headers=SIGNED)
        await http.post(f"{relay.url}/hook/cli_a", content=b"nope", headers=SIGNED)
        status = (await http.get(f"{relay.url}/status")).json()
    assert status["published"] == 4
    assert status["delivered"] == 3
    assert status["undelivered"] == 1
    assert (status["acks"], status["replies"], status["timeouts"], status["rejected"]) == (1, 1, 1, 1)
    assert (status["channels"], status["subscribers"], status["pending_replies"]) == (1, 1, 0)
    assert status["uptime"] >= 0


async def test_heartbeat_drops_a_peer_that_does_not_answer_pings() -> None:
    closed_or_ping: list[aiohttp.WSMsgType] = []
    async with (
        run_relay(test_config(heartbeat=0.2)) as relay,
        aiohttp.ClientSession() as session,
        session.ws_connect(relay.ws_url("cli_a", proto=None), autoping=False) as ws,
    ):
        while True:
            msg = await asyncio.wait_for(ws.receive(), 3)
            closed_or_ping.append(msg.type)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                break
    assert closed_or_ping[0] == aiohttp.WSMsgType.PING
    assert closed_or_ping[-1] in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_accepted_sockets_have_tcp_nodelay(http: httpx.AsyncClient) -> None:
    config = test_config()
    app = create_app(config)

    async def nodelay(request: web.Request) -> web.Response:
        assert request.transport is not None
        sock = request.transport.get_extra_info("socket")
        return web.json_response(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    app.router.add_get("/_test/nodelay", nodelay)
    async with run_relay(config, app=app) as relay:
        resp = await http.get(f"{relay.url}/_test/nodelay")
    assert resp.json() != 0


async def test_a_stopping_relay_lets_waiting_requests_be_answered_then_closes_websockets_1012(
    http: httpx.AsyncClient,
) -> None:
    """Drain (issue 21): the bot's answer during the drain still reaches Feishu; then 1012 (reconnect)."""
    relay = await start_relay(test_config(ack_timeout=5, shutdown_timeout=5))
    try:
        async with connect(relay.ws_url("cli_a")) as ws:
            await recv_json(ws)  # hello
            pending = asyncio.ensure_future(http.post(f"{relay.url}/hook/cli_a", json={"event": {}}))
            envelope = await recv_json(ws)
            stopping = asyncio.ensure_future(relay.stop())
            await asyncio.sleep(0)  # let the stop begin: the drain waits for the answer below
            await ws.send(json.dumps({"type": "ack", "request_id": envelope["headers"]["x-request-id"]}))
            resp = await pending
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            await stopping
        assert resp.status_code == 200
        assert ws.close_code == 1012
    finally:
        await relay.stop()


async def test_a_request_still_unanswered_when_the_drain_ends_gets_503(http: httpx.AsyncClient) -> None:
    relay = await start_relay(test_config(ack_timeout=5, shutdown_timeout=0.3))
    try:
        async with connect(relay.ws_url("cli_a")) as ws:
            await recv_json(ws)
            pending = asyncio.ensure_future(http.post(f"{relay.url}/hook/cli_a", json={"event": {}}))
            await recv_json(ws)
            await relay.stop()
            resp = await pending
        assert resp.status_code == 503 and resp.json() == {"msg": "relay is shutting down"}
        assert ws.close_code == 1012
    finally:
        await relay.stop()


def test_relay_thread_restarts_on_the_same_port_and_clients_can_reconnect() -> None:
    thread = RelayThread(test_config())
    with thread:
        url = thread.ws_url("cli_a", proto=None)
        port = thread.port
        ws = sync_connect(url)
        thread.stop()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=3)
        assert ws.close_code == 1012
        thread.start()
        assert thread.port == port
        with sync_connect(url) as ws2:
            ws2.send("PING")
            assert ws2.recv(timeout=3) == "PONG"
        assert thread.status()["subscribes"] == 1


def test_serve_help_lists_every_env_var(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for f in option_fields():
        assert env_name(f.name) in out


def test_cli_serve_on_port_zero_prints_the_listening_line_and_serves() -> None:
    env = {**os.environ, "WSLARKBOT_HOST": "127.0.0.1", "WSLARKBOT_CHALLENGE_TIMEOUT": "0.2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wslarkbot", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        while True:
            line = lines.get(timeout=15)
            if "wslarkbot relay listening on http://" in line:
                break
        url = line.rsplit(" ", 1)[-1].strip()
        port = int(url.rsplit(":", 1)[1])
        assert port != 0
        assert httpx.get(f"{url}/healthz", timeout=5).text == "ok"
        # the env var reached the config: an unanswered challenge times out after 0.2 s
        with sync_connect(f"ws://127.0.0.1:{port}/sub/cli_a"):
            challenge = {"type": "url_verification", "challenge": "c", "token": "t"}
            resp = httpx.post(f"{url}/hook/cli_a", json=challenge, timeout=5)
        assert resp.json() == {"msg": "no reply from the bot within 0.2 s"}
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
        reader.join(5)
        proc.stderr.close()
    assert code == 0
