"""Feishu's payload encryption and request signatures. No I/O.

Implements ../shared/feishu/protocol.md §2 (AES-256-CBC) and §3 (signatures):

* key = SHA256(utf8(encrypt_key)); body = base64(iv[16] || AES-256-CBC(PKCS7(plaintext)))
* events and new callbacks: ``X-Lark-Signature = hex(sha256(ts + nonce + encrypt_key || raw_body))``
* legacy card callbacks: ``X-Lark-Signature = hex(sha1(ts + nonce + verification_token || raw_body))``

Every comparison of secrets or signatures uses :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .exceptions import DecryptError, SignatureError

__all__ = [
    "aes_key",
    "card_signature",
    "decrypt",
    "encrypt",
    "event_signature",
    "secure_equals",
    "verify_card_signature",
    "verify_event_signature",
]

_BLOCK = 16


def _b(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def aes_key(encrypt_key: str | bytes) -> bytes:
    """The 32-byte AES key Feishu derives from an Encrypt Key: ``sha256(utf8(key))``."""
    return hashlib.sha256(_b(encrypt_key)).digest()


def encrypt(plaintext: str | bytes, encrypt_key: str | bytes, *, iv: bytes | None = None) -> str:
    """Encrypt like Feishu does; a fresh random IV unless one is given (tests only).

    Returns:
        ``base64(iv || ciphertext)`` as ``str``, the value of the ``encrypt`` field.
    """
    iv = os.urandom(_BLOCK) if iv is None else iv
    if len(iv) != _BLOCK:
        raise ValueError("iv must be 16 bytes")
    padder = padding.PKCS7(128).padder()
    padded = padder.update(_b(plaintext)) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key(encrypt_key)), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def decrypt(encrypted: str | bytes, encrypt_key: str | bytes) -> bytes:
    """Decrypt the ``encrypt`` field of a Feishu body.

    Raises:
        DecryptError: not base64, not whole blocks, or bad PKCS7 padding (a wrong key, almost always).
    """
    if not encrypt_key:
        raise DecryptError("body is encrypted but no encrypt_key is configured")
    try:
        raw = base64.b64decode(_b(encrypted), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecryptError("encrypt field is not valid base64") from exc
    if len(raw) < 2 * _BLOCK or len(raw) % _BLOCK:
        raise DecryptError("encrypt field has the wrong length for AES-256-CBC")
    decryptor = Cipher(algorithms.AES(aes_key(encrypt_key)), modes.CBC(raw[:_BLOCK])).decryptor()
    padded = decryptor.update(raw[_BLOCK:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise DecryptError("cannot decrypt: wrong encrypt_key or corrupted body") from exc


def secure_equals(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time comparison of two secrets or signatures."""
    return hmac.compare_digest(_b(a), _b(b))


def event_signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    """``X-Lark-Signature`` of an event or new-style callback (protocol.md §3A)."""
    return hashlib.sha256(_b(timestamp + nonce + encrypt_key) + body).hexdigest()


def card_signature(timestamp: str, nonce: str, verification_token: str, body: bytes) -> str:
    """``X-Lark-Signature`` of a legacy card callback, ``card.action.trigger_v1`` (protocol.md §3B)."""
    return hashlib.sha1(_b(timestamp + nonce + verification_token) + body).hexdigest()


def verify_event_signature(
    timestamp: str | None, nonce: str | None, signature: str | None, encrypt_key: str, body: bytes
) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is the sha256 signature of ``body``."""
    if not (timestamp and nonce and signature):
        raise SignatureError("signature headers missing (X-Lark-Request-Timestamp/Nonce/Signature)")
    if not secure_equals(event_signature(timestamp, nonce, encrypt_key, body), signature):
        raise SignatureError("X-Lark-Signature does not match the body")


def verify_card_signature(
    timestamp: str | None, nonce: str | None, signature: str | None, verification_token: str, body: bytes
) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is the legacy sha1 card signature of ``body``."""
    if not (timestamp and nonce and signature):
        raise SignatureError("signature headers missing (X-Lark-Request-Timestamp/Nonce/Signature)")
    if not secure_equals(card_signature(timestamp, nonce, verification_token, body), signature):
        raise SignatureError("X-Lark-Signature does not match the legacy card body")
