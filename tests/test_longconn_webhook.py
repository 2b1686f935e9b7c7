"""Webhook verification, answer mapping and delivery through the hub, without sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from typing import Any

import pytest

from wslarkbot.crypto import encrypt, event_signature
from wslarkbot.exceptions import DecryptError, MalformedRequestError, SignatureError, TokenMismatchError
from wslarkbot.relay.longconn.config import GatewayApp, GatewayConfig, hash_secret
from wslarkbot.relay.longconn.frame import METHOD_CONTROL, METHOD_DATA, Frame, decode_frame, encode_frame
from wslarkbot.relay.longconn.registry import ClientRegistry, Connection, DeliveryTimeout, NoClientConnected
from wslarkbot.relay.longconn.webhook import OpenedWebhook, http_answer, open_webhook, relay_webhook

KEY, TOKEN = "ek", "vt"
APP = GatewayApp(
    app_id="cli_a", app_secret_sha256=hash_secret("s"), encrypt_key=KEY, verification_token=TOKEN
)
EVENT = {
    "schema": "2.0",
    "header": {"event_id": "e1", "event_type": "im.message.receive_v1", "token": TOKEN, "app_id": "cli_a"},
    "event": {"message": {"message_id": "om_1", "content": "{}"}},
}


def signed(payload: dict[str, Any], *, key: str = KEY, sign_key: str | None = None) -> tuple[dict, bytes]:
    body = json.dumps({"encrypt": encrypt(json.dumps(payload), key)}).encode()
    ts, nonce = "1700000000", "nonce"
    headers = {
        "x-lark-request-timestamp": ts,
        "X-Lark-Request-Nonce": nonce,
        "X-Lark-Signature": event_signature(ts, nonce, sign_key or key, body),
    }
    return headers, body


def test_encrypted_signed_event_opens_to_its_plaintext() -> None:
    opened = open_webhook(APP, *signed(EVENT))
    assert (opened.kind, opened.event_type, opened.event_id) == ("event", "im.message.receive_v1", "e1")
    assert json.loads(opened.plaintext) == EVENT


def test_card_action_is_a_callback() -> None:
    payload = json.loads(json.dumps(EVENT))
    payload["header"]["event_type"] = "card.action.trigger"
    assert open_webhook(APP, *signed(payload)).kind == "callback"


def test_url_verification_is_answered_without_signature() -> None:
    body = json.dumps(
        {"encrypt": encrypt(json.dumps({"type": "url_verification", "challenge": "c1", "token": TOKEN}), KEY)}
    )
    assert open_webhook(APP, {}, body.encode()).challenge == "c1"


@pytest.mark.parametrize(
    ("payload", "headers_body", "error"),
    [
        (EVENT, lambda p: signed(p, sign_key="other"), SignatureError),
        (EVENT, lambda p: ({}, signed(p)[1]), SignatureError),
        (EVENT, lambda p: signed(p, key="wrong key"), SignatureError),  # checked before decrypting
        (EVENT, lambda p: ({}, signed(p, key="wrong key")[1]), DecryptError),  # unsigned: decrypted
        ({**EVENT, "header": {**EVENT["header"], "token": "bad"}}, signed, TokenMismatchError),
        ({"type": "url_verification", "challenge": "c", "token": "bad"}, signed, TokenMismatchError),
        ({"open_message_id": "om", "action": {}}, signed, MalformedRequestError),  # legacy card callback
        (EVENT, lambda p: ({}, b"not json"), MalformedRequestError),
    ],
)
def test_bad_webhooks_are_rejected(payload: dict, headers_body: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        open_webhook(APP, *headers_body(payload))


def test_v1_event_is_accepted() -> None:
    payload = {"uuid": "u1", "token": TOKEN, "type": "event_callback", "event": {"type": "p2p_chat_create"}}
    opened = open_webhook(APP, *signed(payload))
    assert (opened.event_type, opened.event_id) == ("p2p_chat_create", "u1")


EVENT_OPENED = OpenedWebhook("event", b"{}")
CALLBACK_OPENED = OpenedWebhook("callback", b"{}")


def test_answers_map_to_feishu_responses() -> None:
    toast = {"toast": {"type": "info", "content": "hi"}}
    data = base64.b64encode(json.dumps(toast).encode()).decode()
    assert http_answer(EVENT_OPENED, {"code": 200}).answer.body == b'{"msg":"success"}'
    assert json.loads(http_answer(CALLBACK_OPENED, {"code": 200, "data": data}).answer.body) == toast
    assert http_answer(CALLBACK_OPENED, {"code": 200}).answer.body == b"{}"
    assert http_answer(EVENT_OPENED, {"code": 500}).answer.status == 500
    assert http_answer(CALLBACK_OPENED, {"code": 200, "data": "!!"}).answer.status == 502


# --- hub, with fake connections ---------------------------------------------------------------------


class FakeClient:
    """Records frames sent to it; answers them per ``mode``: "ack", "fail", "mute" or "die"."""

    def __init__(self, hub: ClientRegistry, mode: str = "ack", app_id: str = "cli_a") -> None:
        self.hub, self.mode, self.frames = hub, mode, []
        self.conn = Connection(app_id, f"dev-{id(self)}", self.send)

    async def send(self, data: bytes) -> None:
        frame = decode_frame(data)
        self.frames.append(frame)
        if frame.header("seq") != str(int(frame.header("sum") or 1) - 1):
            return
        if self.mode == "die":
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.hub.remove(self.conn)))
        elif self.mode in ("ack", "fail"):
            code = 200 if self.mode == "ack" else 500
            reply = Frame(
                method=METHOD_DATA, headers=frame.headers, payload=json.dumps({"code": code}).encode()
            )
            asyncio.get_running_loop().call_soon(self.hub.receive, self.conn, encode_frame(reply))


class First(random.Random):
    def choice(self, seq: Any) -> Any:
        return seq[0]


def make_hub(**app_kw: Any) -> ClientRegistry:
    app = GatewayApp(app_id="cli_a", app_secret_sha256=hash_secret("s"), encrypt_key=KEY, **app_kw)
    return ClientRegistry(GatewayConfig(apps={"cli_a": app}, fragment_bytes=10), rng=First())


async def connect(hub: ClientRegistry, mode: str) -> FakeClient:
    client = FakeClient(hub, mode)
    await hub.add(client.conn)
    return client


async def test_no_client_raises_no_client_connected() -> None:
    with pytest.raises(NoClientConnected):
        await make_hub().deliver("cli_a", b"{}", timeout=1)


async def test_payload_is_fragmented_and_acked_once() -> None:
    hub = make_hub()
    client = await connect(hub, "ack")
    assert await hub.deliver("cli_a", b"x" * 35, timeout=1) == {"code": 200}
    assert [f.header("seq") for f in client.frames] == ["0", "1", "2", "3"]
    assert b"".join(f.payload or b"" for f in client.frames) == b"x" * 35


async def test_silent_client_times_out() -> None:
    hub = make_hub()
    await connect(hub, "mute")
    with pytest.raises(DeliveryTimeout):
        await hub.deliver("cli_a", b"{}", timeout=0.05)


async def test_dying_client_fails_over_to_the_next() -> None:
    hub = make_hub()
    dying, good = await connect(hub, "die"), await connect(hub, "ack")
    assert await hub.deliver("cli_a", b"{}", timeout=1) == {"code": 200}
    assert dying.frames and good.frames


async def test_only_client_dying_means_no_client() -> None:
    hub = make_hub()
    await connect(hub, "die")
    with pytest.raises(NoClientConnected):
        await hub.deliver("cli_a", b"{}", timeout=1)


async def test_one_mode_sends_to_one_client_only() -> None:
    hub = make_hub()
    first, second = await connect(hub, "ack"), await connect(hub, "ack")
    await hub.deliver("cli_a", b"{}", timeout=1)
    assert len(first.frames) == 1 and second.frames == []


async def test_broadcast_reaches_everyone_and_first_success_wins() -> None:
    hub = make_hub(delivery="broadcast")
    clients = [await connect(hub, mode) for mode in ("fail", "mute", "ack")]
    assert await hub.deliver("cli_a", b"{}", timeout=1) == {"code": 200}
    assert all(c.frames for c in clients)


async def test_broadcast_with_only_failures_returns_the_failure() -> None:
    hub = make_hub(delivery="broadcast")
    await connect(hub, "fail")
    assert await hub.deliver("cli_a", b"{}", timeout=0.2) == {"code": 500}


async def test_ping_gets_pong_with_client_config() -> None:
    hub = make_hub()
    client = await connect(hub, "ack")
    reply = hub.receive(
        client.conn, encode_frame(Frame(service=7, method=METHOD_CONTROL, headers=[("type", "ping")]))
    )
    assert reply is not None
    pong = decode_frame(reply)
    assert (pong.header("type"), pong.service) == ("pong", 7)
    assert json.loads(pong.payload or b"") == hub.config.client_config()
    assert hub.receive(client.conn, b"\xff garbage") is None


async def test_connection_limit_counts_reservations() -> None:
    hub = make_hub(max_connections=1)
    assert hub.reserve("cli_a") and not hub.reserve("cli_a")
    hub.release("cli_a")
    await connect(hub, "ack")
    assert not hub.reserve("cli_a")


async def test_relay_webhook_maps_outcomes_to_http() -> None:
    hub = make_hub()
    app = hub.config.apps["cli_a"]
    unsigned = signed({**EVENT, "header": {**EVENT["header"], "token": None}})
    no_client = (await relay_webhook(hub, app, *unsigned, timeout=1, retry_after=7)).answer
    assert no_client.headers is not None
    assert (no_client.status, no_client.headers["Retry-After"]) == (503, "7")
    await connect(hub, "mute")
    timeout = (await relay_webhook(hub, app, *signed(EVENT), timeout=0.05, retry_after=7)).answer
    assert timeout.status == 504
    bad = (await relay_webhook(hub, app, *signed(EVENT, sign_key="x"), timeout=1, retry_after=7)).answer
    assert (bad.status, bad.body) == (401, b'{"msg":"request rejected"}')


def _unsigned_bad_bodies(rng: random.Random) -> dict[str, bytes]:
    """One unsigned body of each kind a padding-oracle attacker would send (issue 17)."""

    def wrapped(token: str) -> bytes:
        return json.dumps({"encrypt": token}).encode()

    raw = bytes(rng.getrandbits(8) for _ in range(48))
    valid = json.dumps({"type": "url_verification", "challenge": "c", "token": "wrong"})
    not_a_challenge = json.dumps({**EVENT, "header": {**EVENT["header"], "event_id": f"e{rng.random()}"}})
    # AES-CBC under the app's key with a random IV and random plaintext bytes: padding bad most times
    bad_padding = base64.b64encode(raw).decode()
    # valid padding but not JSON after decryption
    bad_json = encrypt("\x01not json " + str(rng.random()), KEY)
    return {
        "bad base64": wrapped("!!" + base64.b64encode(raw).decode()[2:]),
        "bad padding": wrapped(bad_padding),
        "bad JSON after decrypt": wrapped(bad_json),
        "valid JSON, not a challenge": wrapped(encrypt(not_a_challenge, KEY)),
        "wrong token": wrapped(encrypt(valid, KEY)),
    }


async def test_every_unsigned_bad_body_gets_one_and_the_same_answer_whatever_failed() -> None:
    """No oracle: 200 random bodies of each kind, unsigned (as url_verification arrives), all answered
    byte for byte alike: status, body and headers."""
    hub = make_hub()
    app = GatewayApp(
        app_id="cli_a", app_secret_sha256=hash_secret("s"), encrypt_key=KEY, verification_token=TOKEN
    )
    rng = random.Random(17)
    seen: dict[str, set[tuple[int, bytes, tuple[tuple[str, str], ...]]]] = {}
    for _ in range(200):
        for kind, body in _unsigned_bad_bodies(rng).items():
            answer = (await relay_webhook(hub, app, {}, body, timeout=1, retry_after=7)).answer
            seen.setdefault(kind, set()).add(
                (answer.status, answer.body, tuple(sorted((answer.headers or {}).items())))
            )
    answers = set().union(*seen.values())
    assert len(answers) == 1, seen
    assert next(iter(answers))[0] == 401
