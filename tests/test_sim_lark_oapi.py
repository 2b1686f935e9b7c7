"""The simulator's crypto checked against the official SDK (lark-oapi 1.7.5), not against our own code.

lark-oapi's ``EventDispatcherHandler`` / ``CardActionHandler`` run behind a real HTTP server on
127.0.0.1:0; the simulator pushes to it exactly as Feishu would (protocol.md §2, §3, §11).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

lark = pytest.importorskip("lark_oapi")

from wslarkbot.sim import ERR_HTTP_STATUS, FeishuSimulator  # noqa: E402

Tamper = Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]
NON_ASCII = "你好, Feishu ✓ — émoji 🚀"


def _canonical(name: str) -> str:
    # What Go/werkzeug hand to an SDK adapter: X-Lark-Request-Timestamp, X-Request-Id.
    return "-".join(part.capitalize() for part in name.split("-"))


def lark_endpoint(handler: Any, tampers: list[Tamper | None] | None = None) -> Callable[..., Any]:
    """An aiohttp handler that feeds the request to a lark-oapi handler, as its Flask adapter does.

    ``tampers`` are applied to successive requests (one each, ``None`` = unchanged), then requests pass.
    """
    pending = list(tampers or [])

    async def endpoint(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {_canonical(k): v for k, v in request.headers.items()}
        tamper = pending.pop(0) if pending else None
        if tamper is not None:
            body, headers = tamper(body, headers)
        raw = lark.RawRequest()
        raw.uri = request.path
        raw.body = body
        raw.headers = headers
        resp = handler.do(raw)
        return web.Response(status=resp.status_code, body=resp.content, content_type="application/json")

    return endpoint


def flip_body_byte(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    # Flip a byte inside the base64 ciphertext: still JSON, but no longer what was signed.
    i = body.index(b'"encrypt":"') + len(b'"encrypt":"') + 5
    flipped = b"B" if body[i : i + 1] != b"B" else b"C"
    return body[:i] + flipped + body[i + 1 :], headers


def flip_signature(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    sig = headers["X-Lark-Signature"]
    headers = dict(headers, **{"X-Lark-Signature": ("0" if sig[0] != "0" else "1") + sig[1:]})
    return body, headers


def test_official_aes_cipher_decrypts_the_documented_vector(samples_dir):
    from lark_oapi.core.utils import AESCipher

    for v in json.loads((samples_dir / "crypto_test_vectors.json").read_text())["vectors"]:
        assert AESCipher(v["encrypt_key"]).decrypt_str(v["encrypt"]) == v["plaintext"]


def test_official_aes_cipher_decrypts_what_the_simulator_encrypts(sim_app):
    from lark_oapi.core.utils import AESCipher

    from wslarkbot.sim.protocol import build_request

    payload = {"text": NON_ASCII}
    req = build_request(sim_app, payload, kind="event", timestamp="1", nonce="n", request_id="r")
    enc = json.loads(req.body)["encrypt"]
    assert len(base64.b64decode(enc)) % 16 == 0
    assert json.loads(AESCipher(sim_app.encrypt_key).decrypt_str(enc)) == payload


async def test_official_sdk_accepts_encrypted_signed_text_message(sim_app, http_peer, feishu_sim_factory):
    """An encrypted, sha256-signed im.message.receive_v1 with non-ASCII text reaches the handler intact."""
    received: list[Any] = []
    handler = (
        lark.EventDispatcherHandler.builder(sim_app.encrypt_key, sim_app.verification_token)
        .register_p2_im_message_receive_v1(received.append)
        .build()
    )
    sim: FeishuSimulator = feishu_sim_factory(await http_peer(lark_endpoint(handler)))
    result = await sim.send_text_message(NON_ASCII, chat_type="group")

    assert result.delivered and result.retries == 0
    assert result.attempts[0].status == 200
    assert "X-Lark-Signature" in result.attempts[0].headers
    assert list(json.loads(result.attempts[0].body)) == ["encrypt"]
    [event] = received
    sent = result.attempts[0].payload
    assert event.header.event_id == sent["header"]["event_id"] == result.key
    assert event.header.app_id == sim_app.app_id
    assert event.event.message.message_id == sent["event"]["message"]["message_id"]
    assert event.event.message.chat_type == "group"
    assert json.loads(event.event.message.content) == {"text": NON_ASCII}


async def test_official_sdk_accepts_plain_text_message_of_app_without_encrypt_key(
    sim_app_plain, http_peer, feishu_sim_factory
):
    received: list[Any] = []
    handler = (
        lark.EventDispatcherHandler.builder("", sim_app_plain.verification_token)
        .register_p2_im_message_receive_v1(received.append)
        .build()
    )
    sim = feishu_sim_factory(await http_peer(lark_endpoint(handler)), app=sim_app_plain)
    result = await sim.send_text_message(NON_ASCII)
    assert result.delivered
    assert "X-Lark-Signature" not in result.attempts[0].headers
    assert json.loads(received[0].event.message.content) == {"text": NON_ASCII}


async def test_official_sdk_accepts_v1_app_ticket(sim_app, http_peer, feishu_sim_factory):
    received: list[Any] = []
    handler = (
        lark.EventDispatcherHandler.builder(sim_app.encrypt_key, sim_app.verification_token)
        .register_p1_customized_event("app_ticket", received.append)
        .build()
    )
    sim = feishu_sim_factory(await http_peer(lark_endpoint(handler)))
    result = await sim.send_app_ticket()
    assert result.delivered
    [event] = received
    assert event.uuid == result.key
    assert event.event["app_id"] == sim_app.app_id
    assert event.event["app_ticket"] == result.attempts[0].payload["event"]["app_ticket"]


async def test_official_sdk_answers_the_encrypted_unsigned_challenge(sim_app, http_peer, feishu_sim_factory):
    handler = lark.EventDispatcherHandler.builder(sim_app.encrypt_key, sim_app.verification_token).build()
    sim = feishu_sim_factory(await http_peer(lark_endpoint(handler)))
    result = await sim.url_verification()
    assert result.ok, result.error
    [sent] = sim.sent
    assert list(json.loads(sent.body)) == ["encrypt"]
    assert not any(h.startswith("X-Lark-") for h in sent.headers)


@pytest.mark.parametrize("tamper", [flip_body_byte, flip_signature], ids=["body", "signature"])
async def test_official_sdk_rejects_tampered_copy_and_simulator_retries_it(
    tamper, sim_app, http_peer, feishu_sim_factory
):
    """A tampered first attempt gets a non-200; the simulator retries with the same event_id, which passes."""
    received: list[Any] = []
    handler = (
        lark.EventDispatcherHandler.builder(sim_app.encrypt_key, sim_app.verification_token)
        .register_p2_im_message_receive_v1(received.append)
        .build()
    )
    sim = feishu_sim_factory(await http_peer(lark_endpoint(handler, [tamper])))
    result = await sim.send_text_message("hi")

    assert [a.status for a in result.attempts] == [500, 200]
    assert {a.key for a in result.attempts} == {result.key}
    assert len(received) == 1 and received[0].header.event_id == result.key


async def test_official_sdk_rejecting_every_attempt_gets_the_event_dropped(
    sim_app, http_peer, feishu_sim_factory
):
    handler = (
        lark.EventDispatcherHandler.builder(sim_app.encrypt_key, sim_app.verification_token)
        .register_p2_im_message_receive_v1(lambda _e: None)
        .build()
    )
    sim = feishu_sim_factory(await http_peer(lark_endpoint(handler, [flip_signature] * 5)), time_scale=1e-5)
    result = await sim.send_text_message("hi")
    assert result.dropped and [a.status for a in result.attempts] == [500] * 5


async def test_official_sdk_callback_answer_passes_the_simulators_judging(
    sim_app, http_peer, feishu_sim_factory
):
    """card.action.trigger: encrypted + sha256 like events; the SDK's toast response is judged valid."""
    from lark_oapi.event.callback.model.p2_card_action_trigger import P2CardActionTriggerResponse

    seen: list[Any] = []

    def on_action(data: Any) -> Any:
        seen.append(data)
        return P2CardActionTriggerResponse({"toast": {"type": "success", "content": "已处理"}})

    handler = (
        lark.EventDispatcherHandler.builder(sim_app.encrypt_key, sim_app.verification_token)
        .register_p2_card_action_trigger(on_action)
        .build()
    )
    sim = feishu_sim_factory(await http_peer(lark_endpoint(handler)))
    result = await sim.send_card_action({"k": "v"}, open_chat_id="oc_1")
    assert result.ok, result.error
    assert result.response["toast"] == {"type": "success", "content": "已处理"}
    assert seen[0].event.action.value == {"k": "v"}
    assert seen[0].event.context.open_chat_id == "oc_1"
    assert seen[0].event.token.startswith("c-")


async def test_official_card_action_handler_accepts_sha1_signed_legacy_card(
    sim_app, http_peer, feishu_sim_factory
):
    cards: list[Any] = []

    def on_card(card: Any) -> Any:
        cards.append(card)
        return {"toast": {"type": "info", "content": "ok"}}

    builder = lark.CardActionHandler.builder(sim_app.encrypt_key, sim_app.verification_token)
    handler = builder.register(on_card).build()
    url = await http_peer(lark_endpoint(handler, [None, flip_signature]))
    sim = feishu_sim_factory(card_url=url)

    assert (await sim.url_verification(target="card")).ok
    rejected = await sim.send_legacy_card_action({"a": 1})  # first one tampered: the SDK refuses it
    assert rejected.error_code == ERR_HTTP_STATUS and rejected.status == 500
    accepted = await sim.send_legacy_card_action({"a": 1}, open_message_id="om_1")
    assert accepted.ok and accepted.response == {"toast": {"type": "info", "content": "ok"}}
    assert len(cards) == 1 and cards[0].action.value == {"a": 1} and cards[0].open_message_id == "om_1"
    assert json.loads(sim.sent[-1].body)["open_message_id"] == "om_1"  # plain, never encrypted
