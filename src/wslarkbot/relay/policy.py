"""Which webhook requests wait for the bot, and for how long. No I/O.

Feishu needs the url_verification challenge back within 1 s and callbacks/events within 3 s
(shared/feishu/protocol.md §4, §5, §6).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from ..events import CALLBACK_EVENT_TYPES  # v2 callbacks shown to the user (protocol.md §6a): one list
from .config import RelayConfig

__all__ = ["CALLBACK_EVENT_TYPES", "WaitKind", "classify", "timeout_for"]


class WaitKind(enum.Enum):
    CHALLENGE = "challenge"  # unsigned, encrypted or url_verification: the reply is the answer
    CALLBACK = "callback"  # a plaintext card / url-preview callback: the reply is the answer
    EVENT = "event"  # events and encrypted bodies: protocol-2 bots reply or ack; others get 200 at once


def classify(headers: Mapping[str, str], body: Any) -> WaitKind:
    """Classify a webhook request.

    Args:
        headers: request headers with lower-case names.
        body: the decoded JSON body.
    """
    # url_verification requests carry no signature headers (protocol.md §1). Feishu signs every
    # encrypted event, so an unsigned body is a challenge unless it is plaintext that says otherwise:
    # an app without an Encrypt Key gets unsigned plaintext events and callbacks too (protocol.md §3A),
    # and those must wait as long as events/callbacks do, not 0.9 s (the original relay held them
    # for the challenge's time and answered Feishu with an error).
    plain = isinstance(body, dict) and "encrypt" not in body and body.get("type") != "url_verification"
    if not headers.get("x-lark-signature") and not plain:
        return WaitKind.CHALLENGE
    if isinstance(body, dict):
        # Legacy card callback (protocol.md §6b): flat, never encrypted.
        if "action" in body and "open_message_id" in body:
            return WaitKind.CALLBACK
        header = body.get("header")
        if isinstance(header, dict) and header.get("event_type") in CALLBACK_EVENT_TYPES:
            return WaitKind.CALLBACK
    return WaitKind.EVENT


def timeout_for(kind: WaitKind, config: RelayConfig) -> float:
    """Seconds to wait for the bot's answer to a request of ``kind``."""
    if kind is WaitKind.CHALLENGE:
        return config.challenge_timeout
    if kind is WaitKind.CALLBACK:
        return config.callback_timeout
    return config.ack_timeout
