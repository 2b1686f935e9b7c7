"""Which webhook requests the relay holds for the bot, and for how long (relay/policy.py, no sockets)."""

from __future__ import annotations

import json

import pytest

from wslarkbot.relay.config import RelayConfig
from wslarkbot.relay.policy import WaitKind, classify, timeout_for

SIGNED = {"x-lark-signature": "ab" * 32, "x-lark-request-timestamp": "1", "x-lark-request-nonce": "n"}


def _sample(samples_dir, name):
    return json.loads((samples_dir / name).read_text())


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, {"encrypt": "AAAA"}),  # encrypted url_verification: Feishu never signs it
        ({}, {"challenge": "c", "token": "t", "type": "url_verification"}),
        ({}, ["not", "an", "object"]),
    ],
)
def test_unsigned_encrypted_or_url_verification_bodies_wait_as_challenges(headers, body):
    assert classify(headers, body) is WaitKind.CHALLENGE


def test_unsigned_plaintext_event_of_an_app_without_encrypt_key_waits_as_an_event(samples_dir):
    assert classify({}, _sample(samples_dir, "im.message.receive_v1.json")) is WaitKind.EVENT
    assert classify({}, _sample(samples_dir, "app_ticket.v1.json")) is WaitKind.EVENT


def test_plaintext_card_callbacks_wait_as_callbacks_signed_or_not(samples_dir):
    for name in ("card.action.trigger.json", "card.action.trigger_v1.legacy.json", "url.preview.get.json"):
        body = _sample(samples_dir, name)
        assert classify({}, body) is WaitKind.CALLBACK, name
        assert classify(SIGNED, body) is WaitKind.CALLBACK, name


def test_signed_encrypted_bodies_wait_as_events_since_the_relay_cannot_read_them():
    assert classify(SIGNED, {"encrypt": "AAAA"}) is WaitKind.EVENT


def test_each_kind_waits_for_its_configured_deadline():
    cfg = RelayConfig(challenge_timeout=0.5, callback_timeout=2.0, ack_timeout=2.5)
    assert timeout_for(WaitKind.CHALLENGE, cfg) == 0.5
    assert timeout_for(WaitKind.CALLBACK, cfg) == 2.0
    assert timeout_for(WaitKind.EVENT, cfg) == 2.5
