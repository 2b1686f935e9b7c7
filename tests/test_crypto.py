"""crypto.py against Feishu's documented test vector and computed signatures (protocol.md §2, §3)."""

from __future__ import annotations

import json

import pytest

from wslarkbot import crypto
from wslarkbot.exceptions import DecryptError, SignatureError


def test_documented_vector_decrypts_to_hello_world(samples_dir):
    vectors = json.loads((samples_dir / "crypto_test_vectors.json").read_text())["vectors"]
    for v in vectors:
        assert crypto.decrypt(v["encrypt"], v["encrypt_key"]).decode() == v["plaintext"]


def test_encrypt_uses_a_fresh_iv_and_round_trips():
    a = crypto.encrypt("hello", "k")
    b = crypto.encrypt("hello", "k")
    assert a != b
    assert crypto.decrypt(a, "k") == crypto.decrypt(b, "k") == b"hello"


def test_decrypt_with_wrong_key_raises_decrypt_error():
    enc = crypto.encrypt('{"a":1}', "right")
    with pytest.raises(DecryptError):
        crypto.decrypt(enc, "wrong")


@pytest.mark.parametrize("bad", ["not base64!!", "AAAA", ""])
def test_decrypt_of_garbage_raises_decrypt_error(bad):
    with pytest.raises(DecryptError):
        crypto.decrypt(bad, "k")


def test_event_signature_matches_the_computed_example():
    body = b'{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}'
    sig = crypto.event_signature("1700000000", "nonce-abc", "test key", body)
    assert sig == "651c41e37268e4e00e77ccde1b4b9d16e624029b82bafa51660c3a382d4f0588"
    crypto.verify_event_signature("1700000000", "nonce-abc", sig, "test key", body)
    with pytest.raises(SignatureError):
        crypto.verify_event_signature("1700000000", "nonce-abc", sig, "test key", body + b" ")
    with pytest.raises(SignatureError):
        crypto.verify_event_signature(None, "nonce-abc", sig, "test key", body)


def test_legacy_card_signature_is_sha1_with_the_verification_token():
    import hashlib

    body = b'{"action":{}}'
    expected = hashlib.sha1(b"1nvtok" + body).hexdigest()
    assert crypto.card_signature("1", "n", "vtok", body) == expected
    crypto.verify_card_signature("1", "n", expected, "vtok", body)
    with pytest.raises(SignatureError):
        crypto.verify_card_signature("1", "n", expected, "other", body)
