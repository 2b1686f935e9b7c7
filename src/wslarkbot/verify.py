"""Verifying one Feishu request: the one implementation used by :class:`~wslarkbot.bot.Bot` (and so the
client) and by the relay's long-connection gateway. No I/O.

Order (shared/feishu/protocol.md §1-§3):

1. an encrypted body needs an Encrypt Key;
2. **signature first** where one is sent: ``X-Lark-Signature`` = sha256(timestamp + nonce + encrypt key +
   raw body), compared in constant time, *before* decrypting, so tampered ciphertext never reaches
   AES-CBC;
3. decrypt: every failure (bad base64, bad length, bad padding, plaintext that is not JSON) raises the
   same :class:`~wslarkbot.exceptions.DecryptError` message, so that nothing a poster can observe tells
   one cause from another (Feishu's url_verification arrives encrypted *without* signature headers, so
   unsigned bodies must still be decrypted: that is why the answer must not depend on the cause);
4. classify (:func:`~wslarkbot.events.parse_payload`), then the signature a plaintext request needs
   (events of apps with an Encrypt Key; legacy card callbacks: sha1 with the Verification Token, or
   sha256 with the key), then the Verification Token (constant time).

Callers answer every :class:`~wslarkbot.exceptions.RequestRejected` the same way and put the exception's
class (the check that failed) in the log of whoever holds the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import crypto
from .events import FeishuEvent, LegacyCardAction, UrlVerification, parse_payload
from .exceptions import DecryptError, MalformedRequestError, SignatureError, TokenMismatchError

__all__ = ["TIMESTAMP", "NONCE", "SIGNATURE", "Verified", "header_value", "verify_request"]

TIMESTAMP, NONCE, SIGNATURE = "x-lark-request-timestamp", "x-lark-request-nonce", "x-lark-signature"


@dataclass(frozen=True)
class Verified:
    """A request that passed :func:`verify_request`.

    Attributes:
        event: the typed payload (``event.raw`` is the decrypted dict).
        plaintext: the decrypted body as Feishu encrypted it (the body itself when it was not encrypted).
        encrypted: the body was an ``{"encrypt": ...}`` wrapper.
        signature_checked: an ``X-Lark-Signature`` was verified.
    """

    event: FeishuEvent
    plaintext: bytes = field(repr=False)
    encrypted: bool
    signature_checked: bool


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """Header ``name`` from headers whose names may be in any case (a plain dict, or a case-insensitive
    mapping such as aiohttp's)."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def verify_request(
    headers: Mapping[str, str],
    body: Any,
    raw: bytes,
    *,
    encrypt_key: str | None,
    verification_token: str | None,
) -> Verified:
    """Verify, decrypt and classify one request (the module docstring gives the order).

    Args:
        headers: the request's headers (names in any case).
        body: the request body decoded as JSON.
        raw: the request body exactly as received (what the signature covers).

    Raises:
        DecryptError: an encrypted body and no (or a wrong) Encrypt Key, or a corrupted body.
        SignatureError: a required ``X-Lark-Signature`` is missing or wrong.
        TokenMismatchError: the payload's Verification Token is not the configured one.
        MalformedRequestError: not a Feishu payload.
    """
    if not isinstance(body, dict):
        raise MalformedRequestError("body is not a JSON object")
    ts, nonce, sig = (
        header_value(headers, TIMESTAMP),
        header_value(headers, NONCE),
        header_value(headers, SIGNATURE),
    )
    encrypted = "encrypt" in body
    signed = False
    plaintext = raw
    data: Any = body
    if encrypted:
        if not encrypt_key:
            raise DecryptError("body is encrypted but no encrypt_key is configured")
        if sig:
            crypto.verify_event_signature(ts, nonce, sig, encrypt_key, raw)
            signed = True
        plaintext, data = _decrypt(body["encrypt"], encrypt_key)
    event = parse_payload(data)
    if not isinstance(event, UrlVerification):  # protocol.md §1, §3: challenges carry no signature
        signed = signed or _check_signature(event, ts, nonce, sig, raw, encrypt_key, verification_token)
    _check_token(event, verification_token, signed=signed)
    return Verified(event, plaintext, encrypted, signed)


def _decrypt(encrypted: Any, encrypt_key: str) -> tuple[bytes, Any]:
    """The plaintext and its JSON. Every failure raises the same message (the cause is chained)."""
    try:
        if not isinstance(encrypted, str):
            raise DecryptError("encrypt field is not a string")
        plaintext = crypto.decrypt(encrypted, encrypt_key)
        return plaintext, json.loads(plaintext)
    except (DecryptError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise DecryptError("cannot decrypt: wrong encrypt_key or corrupted body") from exc


def _check_signature(
    event: FeishuEvent,
    ts: str | None,
    nonce: str | None,
    sig: str | None,
    raw: bytes,
    encrypt_key: str | None,
    verification_token: str | None,
) -> bool:
    """Check the signature a plaintext request needs; True when one was checked."""
    if isinstance(event, LegacyCardAction):
        # §3B: sha1 with the verification token; §9: the newer callback path signs legacy-shaped
        # callbacks with sha256 and the encrypt key, so either configured secret's signature is accepted.
        if not (verification_token or encrypt_key):
            return False
        if not (ts and nonce and sig):
            raise SignatureError("signature headers missing (X-Lark-Request-Timestamp/Nonce/Signature)")
        by_token = bool(verification_token) and crypto.secure_equals(
            crypto.card_signature(ts, nonce, verification_token or "", raw), sig
        )
        by_key = bool(encrypt_key) and crypto.secure_equals(
            crypto.event_signature(ts, nonce, encrypt_key or "", raw), sig
        )
        if not (by_token or by_key):
            raise SignatureError("X-Lark-Signature does not match the legacy card body")
        return True
    if not encrypt_key:
        return False  # §3A: Feishu signs with the encrypt key only
    crypto.verify_event_signature(ts, nonce, sig, encrypt_key, raw)
    return True


def _check_token(event: FeishuEvent, expected: str | None, *, signed: bool) -> None:
    """Compare the carried Verification Token in constant time when one is configured."""
    if not expected or isinstance(event, LegacyCardAction):  # legacy: authenticated by signature
        return
    carried = event.token
    if carried is None:
        if signed:
            return  # the signature already proves the sender knows the encrypt key (as the wheel does)
        raise TokenMismatchError("payload carries no verification token")
    if not crypto.secure_equals(carried, expected):
        raise TokenMismatchError("verification token does not match")
