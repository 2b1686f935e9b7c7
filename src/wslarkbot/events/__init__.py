"""Typed Feishu payloads: v2/v1 events, url_verification, card callbacks. No I/O.

:func:`parse_payload` turns a *decrypted* payload dict into one of these (protocol.md §1, §4, §6)::

    FeishuEvent                     .event_type .token .is_callback .dedup_key .raw
    ├── UrlVerification             {"type": "url_verification", "challenge", "token"}
    ├── EventV2                     {"schema": "2.0", "header": {...}, "event": {...}}
    │   ├── MessageEvent            im.message.receive_v1, with message accessors
    │   └── CallbackV2              a v2 callback answered synchronously (url.preview.get, ...)
    │       └── CardAction          card.action.trigger
    ├── EventV1                     {"uuid", "ts", "token", "type": "event_callback", "event": {"type"}}
    └── LegacyCardAction            card.action.trigger_v1: flat {open_id, open_message_id, action, ...}

Classification follows the official SDK (protocol.md, "How the wheel handles EventDispatcherHandler.do"):
``schema`` present -> v2; else ``uuid`` present -> v1; else ``type == "url_verification"`` -> challenge;
else ``action`` and ``open_message_id`` present -> legacy card callback; anything else is rejected with
:class:`~wslarkbot.exceptions.MalformedRequestError`.

Dedup keys (protocol.md §5): ``im.message.receive_v1`` is deduplicated by ``message_id`` (Feishu's own
advice on that page: "不要依赖 event_id"), other v2 events and callbacks by ``header.event_id``, v1 events
by ``uuid``. Callbacks are never retried by Feishu, but a relay or client may still deliver one twice;
a v2 callback without ``event_id`` (the url.preview.get sample has none) and a legacy card callback use a
content hash, the legacy one as ``open_message_id:card_token:sha256(action)`` because the card token
``c-...`` is issued per card interaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..exceptions import MalformedRequestError
from .base import (
    CALLBACK_EVENT_TYPES,
    CARD_ACTION_TRIGGER,
    MESSAGE_RECEIVE,
    URL_VERIFICATION,
    CallbackV2,
    CardAction,
    EventHeader,
    EventV1,
    EventV2,
    FeishuEvent,
    LegacyCardAction,
    UrlVerification,
    _str_or_none,
)
from .base import LEGACY_CARD_ACTION as LEGACY_CARD_ACTION  # importable, not in __all__
from .message import MessageEvent, _parse_content

__all__ = [
    "CALLBACK_EVENT_TYPES",
    "CallbackV2",
    "CardAction",
    "EventHeader",
    "EventV1",
    "EventV2",
    "FeishuEvent",
    "FeishuRequest",
    "LegacyCardAction",
    "MessageEvent",
    "UrlVerification",
    "parse_payload",
]


def _parse_v2(data: dict[str, Any]) -> EventV2:
    header = data.get("header")
    if not isinstance(header, dict) or not isinstance(header.get("event_type"), str):
        raise MalformedRequestError("v2 payload without header.event_type")
    event = data.get("event", {})
    if not isinstance(event, dict):
        raise MalformedRequestError("v2 payload whose event is not an object")
    hdr = EventHeader.from_dict(header)
    if hdr.event_type == CARD_ACTION_TRIGGER:
        return CardAction(raw=data, header=hdr, event=event)
    if hdr.event_type in CALLBACK_EVENT_TYPES:
        return CallbackV2(raw=data, header=hdr, event=event)
    if hdr.event_type == MESSAGE_RECEIVE:
        message = event.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("message_id"), str):
            raise MalformedRequestError("im.message.receive_v1 without event.message.message_id")
        return MessageEvent(
            raw=data,
            header=hdr,
            event=event,
            message_id=message["message_id"],
            chat_id=_str_or_none(message.get("chat_id")),
            chat_type=_str_or_none(message.get("chat_type")),
            message_type=_str_or_none(message.get("message_type")),
            content=_parse_content(message.get("content")),
        )
    return EventV2(raw=data, header=hdr, event=event)


def _parse_v1(data: dict[str, Any]) -> EventV1:
    event = data.get("event")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise MalformedRequestError("v1 payload without event.type")
    return EventV1(raw=data, uuid=str(data["uuid"]), ts=_str_or_none(data.get("ts")), event=event)


def _parse_legacy_card(data: dict[str, Any]) -> LegacyCardAction:
    action = data.get("action")
    if not isinstance(action, dict) or not isinstance(data.get("open_message_id"), str):
        raise MalformedRequestError("legacy card callback without action object or open_message_id")
    return LegacyCardAction(
        raw=data,
        open_message_id=data["open_message_id"],
        action=action,
        open_id=_str_or_none(data.get("open_id")),
        user_id=_str_or_none(data.get("user_id")),
        open_chat_id=_str_or_none(data.get("open_chat_id")),
        tenant_key=_str_or_none(data.get("tenant_key")),
        card_token=_str_or_none(data.get("token")),
    )


def parse_payload(data: Any) -> FeishuEvent:
    """Classify a decrypted Feishu payload (rules in the module docstring).

    Args:
        data: the decrypted JSON payload (never the ``{"encrypt": ...}`` wrapper).

    Returns:
        The typed event; its ``raw`` is ``data`` itself.

    Raises:
        MalformedRequestError: ``data`` is none of the known shapes, or misses a required field.
    """
    if not isinstance(data, dict):
        raise MalformedRequestError("payload is not a JSON object")
    if "encrypt" in data:
        raise MalformedRequestError("payload is still encrypted")
    if "schema" in data:
        return _parse_v2(data)
    if "uuid" in data:
        return _parse_v1(data)
    if data.get("type") == URL_VERIFICATION:
        challenge = data.get("challenge")
        if not isinstance(challenge, str):
            raise MalformedRequestError("url_verification without a challenge string")
        token = _str_or_none(data.get("token"))
        return UrlVerification(raw=data, challenge=challenge, verification_token=token)
    if "action" in data and "open_message_id" in data:
        return _parse_legacy_card(data)
    raise MalformedRequestError("not a Feishu event, callback or url_verification")


@dataclass(frozen=True)
class FeishuRequest:
    """A verified request: the event plus what the envelope said about it (built by ``Bot.parse``).

    Attributes:
        event: the typed payload.
        headers: the envelope's headers, lower-cased.
        encrypted: the body was an ``{"encrypt": ...}`` wrapper.
        signature_checked: an ``X-Lark-Signature`` was verified (False when no secret applied, §3).
    """

    event: FeishuEvent
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    encrypted: bool = False
    signature_checked: bool = False

    @property
    def data(self) -> dict[str, Any]:
        """The decrypted payload dict (what the seed's ``on_message(data, ...)`` receives)."""
        return self.event.raw

    @property
    def is_challenge(self) -> bool:
        return isinstance(self.event, UrlVerification)

    @property
    def expects_reply(self) -> bool:
        """True when Feishu waits for the response body: a challenge or a callback."""
        return self.is_challenge or self.event.is_callback

    @property
    def request_id(self) -> str:
        """The relay's ``x-request-id`` (or Feishu's ``X-Request-Id``), for logs; may be empty."""
        return self.headers.get("x-request-id", "")
