"""events.py: classification of Feishu's official samples, accessors, dedup keys, malformed payloads."""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

import pytest

from wslarkbot.events import (
    CallbackV2,
    CardAction,
    EventV1,
    EventV2,
    FeishuRequest,
    LegacyCardAction,
    MessageEvent,
    UrlVerification,
    parse_payload,
)
from wslarkbot.exceptions import MalformedRequestError


def load(samples_dir: pathlib.Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((samples_dir / name).read_text("utf-8"))
    return data


@pytest.mark.parametrize(
    ("name", "cls", "event_type", "is_callback"),
    [
        ("im.message.receive_v1.json", MessageEvent, "im.message.receive_v1", False),
        ("event_v2.envelope.json", EventV2, "contact.user_group.created_v3", False),
        ("p2p_chat_create.v1.json", EventV1, "p2p_chat_create", False),
        ("app_ticket.v1.json", EventV1, "app_ticket", False),
        ("card.action.trigger.json", CardAction, "card.action.trigger", True),
        ("card.action.trigger_v1.legacy.json", LegacyCardAction, "card.action.trigger_v1", True),
        ("url.preview.get.json", CallbackV2, "url.preview.get", True),
        ("url_verification.plain.json", UrlVerification, "url_verification", False),
    ],
)
def test_every_official_sample_is_classified(
    samples_dir: pathlib.Path, name: str, cls: type, event_type: str, is_callback: bool
) -> None:
    data = load(samples_dir, name)
    event = parse_payload(data)
    assert type(event) is cls
    assert event.event_type == event_type
    assert event.is_callback is is_callback
    assert event.raw is data


def test_message_event_accessors(samples_dir: pathlib.Path) -> None:
    event = parse_payload(load(samples_dir, "im.message.receive_v1.json"))
    assert isinstance(event, MessageEvent)
    assert event.message_id == "om_5ce6d572455d361153b7cb51da133945"
    assert event.chat_id == "oc_5ce6d572455d361153b7xx51da133945"
    assert event.chat_type == "group"
    assert event.message_type == "text"
    assert event.content == {"text": "@_user_1 hello"}
    assert event.text == "@_user_1 hello"
    assert event.sender_open_id == "ou_84aad35d084aa403a838cf73ee18467"
    assert event.sender_type == "user"
    assert [m["key"] for m in event.mentions] == ["@_user_1"]
    assert event.message_create_time == "1609073151345"
    assert event.create_time == "1608725989000"
    assert event.event_id == "5e3702a84e847582be8db7fb73283c02"
    assert event.app_id == "cli_9f5343c580712544"
    assert event.tenant_key == "2ca1d211f64f6438"
    assert event.token == "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV"


def test_non_text_message_has_no_text_and_bad_content_parses_to_empty(samples_dir: pathlib.Path) -> None:
    data = load(samples_dir, "im.message.receive_v1.json")
    data["event"]["message"].update(message_type="image", content='{"image_key":"img_1"}')
    image = parse_payload(data)
    assert isinstance(image, MessageEvent)
    assert image.text is None and image.content == {"image_key": "img_1"}
    data["event"]["message"].update(message_type="text", content="not json")
    broken = parse_payload(data)
    assert isinstance(broken, MessageEvent)
    assert broken.content == {} and broken.text is None


def test_tokens_carried_by_each_shape(samples_dir: pathlib.Path) -> None:
    """``.token`` is the Verification Token; a card's ``c-...`` token is ``card_token``."""
    assert parse_payload(load(samples_dir, "app_ticket.v1.json")).token == "41a9425ea7df4536a7623e38fa321bae"
    assert parse_payload(load(samples_dir, "url_verification.plain.json")).token == "xxxxxx"
    card = parse_payload(load(samples_dir, "card.action.trigger.json"))
    assert isinstance(card, CardAction)
    assert card.token == "066zT6pS4QCbgj5Do145GfDbbag*****"
    assert card.card_token == "c-295ee57216a5dc9de90fefd0aadb4b1d7d******"
    legacy = parse_payload(load(samples_dir, "card.action.trigger_v1.legacy.json"))
    assert isinstance(legacy, LegacyCardAction)
    assert legacy.token is None
    assert legacy.card_token == "c-xxxxx"


def test_card_action_accessors(samples_dir: pathlib.Path) -> None:
    card = parse_payload(load(samples_dir, "card.action.trigger.json"))
    assert isinstance(card, CardAction)
    assert card.value == {"key": "value"}
    assert card.tag == "button"
    assert card.form_value["field name2"] == "value2"
    assert card.open_id == "ou_3c14f3a59eaf2825dbe25359f15*****"
    assert card.open_message_id == "om_574d639e4a44e4dd646eaf628e2*****"
    assert card.open_chat_id == "oc_e4d2605ca917e695f54f11aaf56*****"
    legacy = parse_payload(load(samples_dir, "card.action.trigger_v1.legacy.json"))
    assert isinstance(legacy, LegacyCardAction)
    assert (legacy.open_id, legacy.user_id) == ("ou_sdfimx9948345", "eu_sd923r0sdf5")
    assert legacy.tenant_key == "d32004232"
    assert legacy.open_message_id == "om_abcdefg1234567890"
    assert legacy.value == {"key": "value"} and legacy.tag == "button"


def test_challenge_fields(samples_dir: pathlib.Path) -> None:
    event = parse_payload(load(samples_dir, "url_verification.plain.json"))
    assert isinstance(event, UrlVerification)
    assert event.challenge == "1b6aef1a-401f-406a-be41-f48911eabcef"
    assert event.dedup_key is None


def test_message_events_dedup_by_message_id_not_event_id(samples_dir: pathlib.Path) -> None:
    """protocol.md §5: the same message may come again under a new event_id."""
    first = load(samples_dir, "im.message.receive_v1.json")
    again = copy.deepcopy(first)
    again["header"]["event_id"] = "another-event-id"
    assert parse_payload(first).dedup_key == "om_5ce6d572455d361153b7cb51da133945"
    assert parse_payload(again).dedup_key == parse_payload(first).dedup_key


def test_other_events_dedup_by_event_id_or_uuid(samples_dir: pathlib.Path) -> None:
    v2 = parse_payload(load(samples_dir, "event_v2.envelope.json"))
    assert v2.dedup_key == "f7984f25108f8137722bb63cee927e66"
    v1 = parse_payload(load(samples_dir, "p2p_chat_create.v1.json"))
    assert v1.dedup_key == "bc447199585340d1f3728d26b1c0297a"
    card = parse_payload(load(samples_dir, "card.action.trigger.json"))
    assert card.dedup_key == "f7984f25108f8137722bb63c*****"


def test_callback_without_event_id_dedups_by_content_hash(samples_dir: pathlib.Path) -> None:
    data = load(samples_dir, "url.preview.get.json")
    key = parse_payload(data).dedup_key
    assert key is not None and key.startswith("sha256:")
    assert parse_payload(copy.deepcopy(data)).dedup_key == key
    data["event"]["context"]["url"] = "https://www.example.com/other"
    assert parse_payload(data).dedup_key != key


def test_legacy_card_dedup_key_changes_with_the_action(samples_dir: pathlib.Path) -> None:
    data = load(samples_dir, "card.action.trigger_v1.legacy.json")
    key = parse_payload(data).dedup_key
    assert key is not None and key.startswith("om_abcdefg1234567890:c-xxxxx:")
    data["action"]["value"] = {"key": "other"}
    assert parse_payload(data).dedup_key != key


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "text",
        {},
        {"hello": "world"},
        {"encrypt": "abc"},
        {"schema": "2.0"},
        {"schema": "2.0", "header": {"event_id": "x"}},
        {"schema": "2.0", "header": {"event_type": "x"}, "event": []},
        {"schema": "2.0", "header": {"event_type": "im.message.receive_v1"}, "event": {"message": {}}},
        {"uuid": "u", "event": {}},
        {"uuid": "u", "event": "x"},
        {"type": "url_verification", "token": "t"},
        {"open_message_id": "om_1", "action": "click"},
        {"action": {"tag": "button"}},
    ],
)
def test_malformed_payloads_are_rejected(payload: Any) -> None:
    with pytest.raises(MalformedRequestError):
        parse_payload(payload)


def test_v2_event_without_event_object_is_accepted_as_empty() -> None:
    event = parse_payload({"schema": "2.0", "header": {"event_type": "custom.thing_v1", "event_id": "e1"}})
    assert isinstance(event, EventV2) and event.event == {} and event.dedup_key == "e1"


def test_feishu_request_expects_reply_for_challenges_and_callbacks(samples_dir: pathlib.Path) -> None:
    headers = {"x-request-id": "req-1"}
    challenge = FeishuRequest(parse_payload(load(samples_dir, "url_verification.plain.json")), headers)
    card = FeishuRequest(parse_payload(load(samples_dir, "card.action.trigger.json")), headers)
    event = FeishuRequest(parse_payload(load(samples_dir, "app_ticket.v1.json")), headers)
    assert challenge.is_challenge and challenge.expects_reply
    assert card.expects_reply and not card.is_challenge
    assert not event.expects_reply
    assert event.request_id == "req-1"
    assert event.data is event.event.raw
