"""Payload builders and the simulator's no-I/O core: official sample shapes, request bytes, judging."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

from wslarkbot import crypto
from wslarkbot.sim import SimApp, payloads
from wslarkbot.sim.protocol import (
    CHALLENGE_ERROR,
    ERR_BAD_BODY,
    ERR_BAD_CARD,
    ERR_HTTP_STATUS,
    build_request,
    judge_callback,
    judge_challenge,
)


def _shape(value: Any) -> Any:
    """The keys (recursively) and value types of a JSON value, ignoring list lengths."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def _sample(samples_dir, name: str) -> Any:
    return json.loads((samples_dir / name).read_text())


def test_random_app_has_feishu_shaped_credentials_and_hides_them_in_repr():
    app = SimApp.random()
    assert re.fullmatch(r"cli_[0-9a-f]{16}", app.app_id)
    assert len(app.app_secret) == len(app.verification_token) == len(app.encrypt_key or "") == 32
    assert app.app_secret not in repr(app) and app.verification_token not in repr(app)
    assert app.encrypt_key not in repr(app)
    assert SimApp.random(encrypt=False).encrypt_key is None
    assert SimApp.random().app_id != app.app_id


def test_text_message_has_the_shape_of_the_official_sample(samples_dir):
    app = SimApp.random()
    mention = payloads.mention("Tom", tenant_key=app.tenant_key)
    got = payloads.text_message(
        app, "@_user_1 hello", chat_type="group", mentions=[mention], root_id="om_r", parent_id="om_p"
    )
    sample = _sample(samples_dir, "im.message.receive_v1.json")
    del sample["event"]["message"]["thread_id"]  # only present for messages in a thread
    assert _shape(got) == _shape(sample)
    assert got["header"]["token"] == app.verification_token
    assert got["header"]["app_id"] == app.app_id
    assert json.loads(got["event"]["message"]["content"]) == {"text": "@_user_1 hello"}


def test_group_message_at_bot_mentions_the_apps_bot_open_id():
    app = SimApp.random()
    message = payloads.text_message(app, "help", chat_type="group", at_bot=True)["event"]["message"]
    assert json.loads(message["content"]) == {"text": "@_user_1 help"}
    [m] = message["mentions"]
    assert m["key"] == "@_user_1" and m["id"]["open_id"] == app.bot_open_id and m["name"] == app.bot_name


def test_p2p_text_message_has_no_mentions_and_fresh_ids():
    app = SimApp.random()
    a, b = payloads.text_message(app, "x"), payloads.text_message(app, "x")
    assert "mentions" not in a["event"]["message"] and "root_id" not in a["event"]["message"]
    assert a["header"]["event_id"] != b["header"]["event_id"]
    assert a["event"]["message"]["message_id"] != b["event"]["message"]["message_id"]
    assert a["event"]["message"]["message_id"].startswith("om_")


@pytest.mark.parametrize(
    ("sample", "build"),
    [
        ("event_v2.envelope.json", lambda app: payloads.event_v2(app, "contact.user_group.created_v3", {})),
        ("app_ticket.v1.json", payloads.app_ticket),
        ("url_verification.plain.json", payloads.url_verification),
        ("card.action.trigger_v1.legacy.json", lambda app: payloads.legacy_card_action(app, {"key": "v"})),
    ],
)
def test_builder_matches_the_official_sample_shape(samples_dir, sample, build):
    expected = _shape(_sample(samples_dir, sample))
    got = build(SimApp.random())
    expected.pop("open_chat_id", None)
    got.pop("open_chat_id", None)  # in the SDK models, not in the doc sample
    assert _shape(got) == expected


def test_card_action_matches_the_sample_minus_url_preview_only_fields(samples_dir):
    app = SimApp.random()
    got = payloads.card_action(app, {"key": "value"}, form_value={"Input": "1"}, name="Button_1")
    sample = _sample(samples_dir, "card.action.trigger.json")
    del sample["event"]["delivery_type"]  # only for url previews
    del sample["event"]["context"]["url"], sample["event"]["context"]["preview_token"]
    sample["event"]["action"]["form_value"] = {"Input": "1"}
    assert _shape(got) == _shape(sample)
    assert got["event"]["token"].startswith("c-")
    assert got["event"]["token"] != payloads.card_action(app)["event"]["token"]


def test_url_preview_matches_the_sample_plus_an_event_id(samples_dir):
    got = payloads.url_preview(SimApp.random(), "https://example.com/x")
    sample = _sample(samples_dir, "url.preview.get.json")
    del got["header"]["event_id"]
    assert _shape(got) == _shape(sample)
    assert got["event"]["context"]["url"] == "https://example.com/x"


def test_v1_event_requires_a_type_and_keeps_the_token_on_top():
    app = SimApp.random()
    with pytest.raises(ValueError):
        payloads.event_v1(app, {"chat_id": "oc_1"})
    event = payloads.event_v1(app, {"type": "p2p_chat_create"})
    assert event["token"] == app.verification_token and event["type"] == "event_callback"
    assert payloads.event_key(event) == event["uuid"]


def test_with_new_event_id_keeps_the_message_and_changes_only_the_key():
    app = SimApp.random()
    original = payloads.text_message(app, "x")
    copy = payloads.with_new_event_id(original)
    assert copy["event"] == original["event"]
    assert payloads.event_key(copy) != payloads.event_key(original)
    v1 = payloads.app_ticket(app)
    assert payloads.with_new_event_id(v1)["uuid"] != v1["uuid"]


def test_event_request_is_encrypted_compact_utf8_and_sha256_signed():
    app = SimApp.random()
    payload = payloads.text_message(app, "你好")
    req = build_request(app, payload, kind="event", timestamp="1700000000", nonce="abc", request_id="rid")
    assert req.headers["Content-Type"] == "application/json;charset=utf-8"
    assert req.headers["User-Agent"] == "Go-http-client/1.1"
    assert req.headers["Accept-Encoding"] == "gzip" and req.headers["X-Request-Id"] == "rid"
    assert req.headers["X-Lark-Request-Timestamp"] == "1700000000"
    signed = b"1700000000abc" + app.encrypt_key.encode() + req.body
    assert req.headers["X-Lark-Signature"] == hashlib.sha256(signed).hexdigest()
    assert req.body.startswith(b'{"encrypt":"') and b" " not in req.body
    plain = crypto.decrypt(json.loads(req.body)["encrypt"], app.encrypt_key)
    assert plain == json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    assert "你好".encode() in plain


def test_each_request_gets_a_fresh_iv():
    app = SimApp.random()
    payload = payloads.app_ticket(app)
    a, b = (build_request(app, payload, kind="event", timestamp="1", nonce="n", request_id="r") for _ in "ab")
    assert a.body != b.body


def test_url_verification_is_encrypted_but_never_signed():
    app = SimApp.random()
    payload = payloads.url_verification(app)
    req = build_request(app, payload, kind="url_verification", timestamp="1", nonce="n", request_id="r")
    assert list(json.loads(req.body)) == ["encrypt"]
    assert not [h for h in req.headers if h.startswith("X-Lark")]


def test_plain_app_sends_unsigned_plaintext_unless_asked_to_sign():
    app = SimApp.random(encrypt=False)
    payload = payloads.app_ticket(app)
    req = build_request(app, payload, kind="event", timestamp="1", nonce="n", request_id="r")
    assert json.loads(req.body) == payload and "X-Lark-Signature" not in req.headers
    signed = build_request(
        app, payload, kind="event", timestamp="1", nonce="n", request_id="r", sign_without_encrypt_key=True
    )
    assert signed.headers["X-Lark-Signature"] == crypto.event_signature("1", "n", "", signed.body)


def test_legacy_card_is_plain_even_with_an_encrypt_key_and_sha1_signed_with_the_token():
    app = SimApp.random()
    payload = payloads.legacy_card_action(app, {"a": 1})
    req = build_request(app, payload, kind="legacy_card", timestamp="5", nonce="n", request_id="r")
    assert json.loads(req.body) == payload
    signed = b"5n" + app.verification_token.encode() + req.body
    assert req.headers["X-Lark-Signature"] == hashlib.sha1(signed).hexdigest()


@pytest.mark.parametrize(
    ("status", "body", "ok"),
    [
        (200, b'{"challenge":"c1"}', True),
        (200, b'{"challenge":"c2"}', False),
        (200, b"c1", False),
        (500, b'{"challenge":"c1"}', False),
        (None, None, False),
    ],
)
def test_challenge_judging_requires_http_200_and_the_same_value(status, body, ok):
    assert (judge_challenge("c1", status, body) is None) is ok
    if not ok:
        assert judge_challenge("c1", status, body) == CHALLENGE_ERROR


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (200, b"{}", None),
        (200, _j({"toast": {"type": "warning", "content": "x", "i18n": {"en_us": "x"}}}), None),
        (200, _j({"card": {"type": "raw", "data": {"schema": "2.0", "body": {"elements": []}}}}), None),
        (200, _j({"card": {"type": "template", "data": {"template_id": "AAq"}}}), None),
        (200, b"", ERR_BAD_BODY),
        (200, b"not json", ERR_BAD_BODY),
        (200, b"[]", ERR_BAD_BODY),
        (200, _j({"toast": {"type": "fatal", "content": "x"}}), ERR_BAD_BODY),
        (200, _j({"toast": {"type": "info"}}), ERR_BAD_BODY),
        (200, _j({"toast": "hello"}), ERR_BAD_BODY),
        (200, _j({"card": {"type": "json", "data": {"elements": []}}}), ERR_BAD_CARD),
        (200, _j({"card": {"type": "raw", "data": "{}"}}), ERR_BAD_CARD),
        (200, _j({"card": {"type": "template", "data": {"template_variable": {}}}}), ERR_BAD_CARD),
        (302, b"", ERR_HTTP_STATUS),
        (500, b"{}", ERR_HTTP_STATUS),
    ],
)
def test_callback_judging_maps_failures_to_feishu_client_error_codes(status, body, code):
    assert judge_callback(status, body)[0] == code


def test_legacy_callback_accepts_empty_body_or_card_json_but_checks_toast():
    assert judge_callback(200, b"", legacy=True)[0] is None
    assert judge_callback(200, _j({"elements": [], "header": {}}), legacy=True)[0] is None
    assert judge_callback(200, _j({"toast": {"type": "nope"}}), legacy=True)[0] == ERR_BAD_BODY
    assert judge_callback(301, b"", legacy=True)[0] == ERR_HTTP_STATUS
