"""FeishuSimulator against real HTTP peers on 127.0.0.1:0: what goes on the wire, and Feishu's judging.

Defaults are Feishu's (1 s challenge, 3 s event/callback); tests shorten timeouts and scale retry
intervals so that they stay fast. The only real waits are deliberately slow peers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from aiohttp import web

from wslarkbot import crypto
from wslarkbot.sim import (
    CHALLENGE_ERROR,
    ERR_BAD_BODY,
    ERR_BAD_CARD,
    ERR_HTTP_STATUS,
    ERR_TIMEOUT,
    SimApp,
    payloads,
)


def decode(app: SimApp, body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    if "encrypt" in data:
        data = json.loads(crypto.decrypt(data["encrypt"], app.encrypt_key or ""))
    return data


class Recorder:
    """A scripted webhook receiver: answers request N with ``script[N]`` (the last entry repeats)."""

    def __init__(self, app: SimApp, *script: Any) -> None:
        self.app = app
        self.script = list(script) or [200]
        self.requests: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            {
                "at": asyncio.get_running_loop().time(),
                "headers": [k for k, _ in request.raw_headers],
                "header": request.headers.copy(),
                "body": body,
                "payload": decode(self.app, body),
            }
        )
        self.arrived.set()
        step = self.script[min(len(self.requests), len(self.script)) - 1]
        if callable(step):
            return await step(request, self.requests[-1]["payload"])
        if isinstance(step, int):
            return web.json_response({"msg": "success"}, status=step)
        return web.json_response(step)


async def hang(request: web.Request, payload: Any) -> web.StreamResponse:
    await asyncio.Event().wait()  # never answers; cancelled when the client gives up or at cleanup
    raise AssertionError("unreachable")


async def echo_challenge(request: web.Request, payload: Any) -> web.StreamResponse:
    return web.json_response({"challenge": payload["challenge"]})


async def test_event_request_carries_exactly_feishus_headers_and_a_valid_signature(
    sim_app, http_peer, feishu_sim_factory
):
    peer = Recorder(sim_app)
    sim = feishu_sim_factory(await http_peer(peer))
    result = await sim.send_text_message("hello")
    [req] = peer.requests
    assert sorted(req["headers"]) == sorted(
        [
            b"Host",
            b"Content-Type",
            b"Content-Length",
            b"User-Agent",
            b"Accept-Encoding",
            b"X-Request-Id",
            b"X-Lark-Request-Timestamp",
            b"X-Lark-Request-Nonce",
            b"X-Lark-Signature",
        ]
    )
    h = req["header"]
    assert h["Content-Type"] == "application/json;charset=utf-8" and h["User-Agent"] == "Go-http-client/1.1"
    assert abs(int(h["X-Lark-Request-Timestamp"]) - time.time()) < 5
    crypto.verify_event_signature(
        h["X-Lark-Request-Timestamp"],
        h["X-Lark-Request-Nonce"],
        h["X-Lark-Signature"],
        sim_app.encrypt_key,
        req["body"],
    )
    assert req["body"] == result.attempts[0].body
    assert req["payload"]["header"]["event_id"] == result.key


async def test_challenge_echoed_in_time_is_ok(sim_app_plain, http_peer, feishu_sim_factory):
    peer = Recorder(sim_app_plain, echo_challenge)
    sim = feishu_sim_factory(await http_peer(peer), app=sim_app_plain)
    result = await sim.url_verification()
    assert result.ok and result.status == 200 and result.error is None
    assert peer.requests[0]["payload"] == {
        "challenge": result.challenge,
        "token": sim_app_plain.verification_token,
        "type": "url_verification",
    }


async def test_challenge_answered_after_one_second_is_not_ok(sim_app, http_peer, feishu_sim_factory):
    async def late(request: web.Request, payload: Any) -> web.StreamResponse:
        await asyncio.sleep(1.2)  # a deliberately slow peer: Feishu's limit is 1 s
        return web.json_response({"challenge": payload["challenge"]})

    sim = feishu_sim_factory(await http_peer(Recorder(sim_app, late)))
    result = await sim.url_verification()
    assert not result.ok and result.error == CHALLENGE_ERROR and result.status is None
    assert 1.0 <= result.elapsed < 1.2


async def test_wrong_challenge_is_not_ok(sim_app, http_peer, feishu_sim_factory):
    sim = feishu_sim_factory(await http_peer(Recorder(sim_app, {"challenge": "something-else"})))
    result = await sim.url_verification()
    assert not result.ok and result.status == 200 and result.error == CHALLENGE_ERROR


async def test_event_answered_500_then_200_is_retried_with_the_same_event_id_after_the_scaled_interval(
    sim_app, http_peer, feishu_sim_factory
):
    peer = Recorder(sim_app, 500, 200)
    sim = feishu_sim_factory(await http_peer(peer), time_scale=0.01)  # 15 s -> 0.15 s
    result = await sim.send_text_message("retry me")

    assert result.delivered and [a.status for a in result.attempts] == [500, 200]
    first, second = peer.requests
    assert first["payload"] == second["payload"]  # same event_id, same message
    assert first["header"]["X-Request-Id"] != second["header"]["X-Request-Id"]
    assert first["header"]["X-Lark-Request-Nonce"] != second["header"]["X-Lark-Request-Nonce"]
    assert first["body"] != second["body"]  # fresh IV
    assert second["at"] - first["at"] >= 0.15


async def test_event_not_answered_within_the_deadline_is_retried(sim_app, http_peer, feishu_sim_factory):
    peer = Recorder(sim_app, hang, 200)
    sim = feishu_sim_factory(await http_peer(peer), event_timeout=0.2)
    result = await sim.send_text_message("slow")
    assert [a.error for a in result.attempts] == ["timeout", None]
    assert result.attempts[0].elapsed >= 0.2 and result.delivered


async def test_event_failing_every_time_is_dropped_after_four_retries(sim_app, http_peer, feishu_sim_factory):
    peer = Recorder(sim_app, 503)
    sim = feishu_sim_factory(await http_peer(peer), time_scale=1e-5)
    result = await sim.send_text_message("never")
    assert result.dropped and not result.delivered and result.retries == 4
    assert len(peer.requests) == 5 == len(sim.sent)
    assert {r["payload"]["header"]["event_id"] for r in peer.requests} == {result.key}


async def test_unreachable_url_counts_as_a_failed_push(sim_app, feishu_sim_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim = feishu_sim_factory(f"http://127.0.0.1:{port}/webhook", retry_intervals=(0.0,))
    result = await sim.send_app_ticket()
    assert result.dropped and len(result.attempts) == 2
    assert all(a.status is None and a.error for a in result.attempts)


async def test_event_response_body_is_ignored(sim_app, http_peer, feishu_sim_factory):
    async def garbage(request: web.Request, payload: Any) -> web.StreamResponse:
        return web.Response(text="<html>not json</html>")

    sim = feishu_sim_factory(await http_peer(Recorder(sim_app, garbage)))
    assert (await sim.send_text_message("x")).delivered


async def test_duplicate_resends_the_identical_event_after_success(sim_app, http_peer, feishu_sim_factory):
    peer = Recorder(sim_app)
    sim = feishu_sim_factory(await http_peer(peer))
    result = await sim.send_text_message("twice", duplicate=True)
    assert result.delivered and result.duplicates[0].delivered
    assert [r["payload"] for r in peer.requests] == [result.attempts[0].payload] * 2


async def test_duplicate_message_new_event_id_keeps_the_message_id(sim_app, http_peer, feishu_sim_factory):
    peer = Recorder(sim_app)
    sim = feishu_sim_factory(await http_peer(peer))
    result = await sim.send_text_message("dup", duplicate_message_new_event_id=True)
    a, b = (r["payload"] for r in peer.requests)
    assert a["header"]["event_id"] != b["header"]["event_id"] == result.duplicates[0].key
    assert a["event"]["message"]["message_id"] == b["event"]["message"]["message_id"]


async def test_background_deliveries_run_concurrently_and_wait_idle_waits_for_retries(
    sim_app, http_peer, feishu_sim_factory
):
    peer = Recorder(sim_app, 500, 200)
    sim = feishu_sim_factory(await http_peer(peer))
    tasks = [sim.deliver_async(payloads.app_ticket(sim_app)) for _ in range(5)]
    await sim.wait_idle(timeout=5)
    assert all(t.done() and t.result().delivered for t in tasks)
    assert len(sim.sent) == len(peer.requests) == 6  # the first one was answered 500 and retried
    assert len({r.key for r in sim.results}) == 5


# -- callbacks ------------------------------------------------------------------------------------

TOAST = {"toast": {"type": "success", "content": "done", "i18n": {"zh_cn": "完成", "en_us": "done"}}}
RAW_CARD = {"card": {"type": "raw", "data": {"schema": "2.0", "body": {"elements": []}}}}


@pytest.mark.parametrize(
    ("answer", "ok", "code"),
    [
        ({}, True, None),
        (TOAST, True, None),
        (RAW_CARD, True, None),
        ({"toast": {"type": "loud", "content": "x"}}, False, ERR_BAD_BODY),
        ({"card": {"type": "raw", "data": []}}, False, ERR_BAD_CARD),
        (500, False, ERR_HTTP_STATUS),
    ],
)
async def test_card_action_answer_is_judged_like_feishu(
    answer, ok, code, sim_app, http_peer, feishu_sim_factory
):
    peer = Recorder(sim_app, answer)
    sim = feishu_sim_factory(callback_url=await http_peer(peer))
    result = await sim.send_card_action({"op": "approve"})
    assert (result.ok, result.error_code) == (ok, code)
    assert len(peer.requests) == 1  # callbacks are never retried
    assert peer.requests[0]["payload"]["header"]["event_type"] == "card.action.trigger"


async def test_card_action_redirect_is_an_error_and_not_followed(sim_app, http_peer, feishu_sim_factory):
    target = Recorder(sim_app, TOAST)
    target_url = await http_peer(target, path="/elsewhere")

    async def redirect(request: web.Request, payload: Any) -> web.StreamResponse:
        raise web.HTTPFound(target_url)

    sim = feishu_sim_factory(callback_url=await http_peer(Recorder(sim_app, redirect)))
    result = await sim.send_card_action()
    assert result.status == 302 and result.error_code == ERR_HTTP_STATUS and not result.ok
    assert target.requests == []


async def test_card_action_answered_too_late_is_error_200341(sim_app, http_peer, feishu_sim_factory):
    sim = feishu_sim_factory(callback_url=await http_peer(Recorder(sim_app, hang)), callback_timeout=0.2)
    result = await sim.send_card_action()
    assert result.error_code == ERR_TIMEOUT and not result.ok and result.elapsed >= 0.2


async def test_url_preview_inline_answer_is_ok(sim_app, http_peer, feishu_sim_factory):
    peer = Recorder(sim_app, {"inline": {"title": "Example"}})
    sim = feishu_sim_factory(callback_url=await http_peer(peer))
    result = await sim.send_url_preview("https://example.com/a")
    assert result.ok and result.response == {"inline": {"title": "Example"}}
    assert peer.requests[0]["payload"]["event"]["context"]["url"] == "https://example.com/a"


async def test_legacy_card_goes_to_card_url_plain_and_sha1_signed(sim_app, http_peer, feishu_sim_factory):
    events, cards = Recorder(sim_app), Recorder(sim_app, {})
    sim = feishu_sim_factory(await http_peer(events), card_url=await http_peer(cards, path="/card"))
    result = await sim.send_legacy_card_action({"k": 1})
    assert result.ok and events.requests == []
    [req] = cards.requests
    assert json.loads(req["body"])["action"]["value"] == {"k": 1}
    h = req["header"]
    crypto.verify_card_signature(
        h["X-Lark-Request-Timestamp"],
        h["X-Lark-Request-Nonce"],
        h["X-Lark-Signature"],
        sim_app.verification_token,
        req["body"],
    )


# -- sync front -----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def test_sync_simulator_delivers_from_blocking_code(sim_app, sync_feishu_sim_factory):
    _Handler.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sim = sync_feishu_sim_factory(f"http://127.0.0.1:{server.server_port}/")
        result = sim.send_text_message("sync")
        assert result.delivered and len(_Handler.received) == 1 == len(sim.sent)
        assert sim.send_card_action().ok
    finally:
        server.shutdown()
        server.server_close()
