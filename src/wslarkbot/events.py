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

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import content as _content
from .exceptions import MalformedRequestError

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

#: v2 event types that are callbacks: Feishu waits (3 s) for the response body (protocol.md §5, §6).
CALLBACK_EVENT_TYPES = frozenset({"card.action.trigger", "url.preview.get"})

MESSAGE_RECEIVE = "im.message.receive_v1"
CARD_ACTION_TRIGGER = "card.action.trigger"
LEGACY_CARD_ACTION = "card.action.trigger_v1"
URL_VERIFICATION = "url_verification"


def _canonical_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class FeishuEvent:
    """Base of every payload type. ``raw`` is the decrypted payload dict, unchanged."""

    raw: dict[str, Any] = field(repr=False)

    #: True for requests whose response body goes back to Feishu (card actions, url preview).
    is_callback: ClassVar[bool] = False

    @property
    def event_type(self) -> str:
        """The Feishu type name, e.g. ``im.message.receive_v1``, ``app_ticket``, ``card.action.trigger``."""
        raise NotImplementedError

    @property
    def token(self) -> str | None:
        """The Verification Token the payload carries, or None when it carries none."""
        raise NotImplementedError

    @property
    def dedup_key(self) -> str | None:
        """A stable id for deduplication (module docstring); None when the payload has nothing stable."""
        raise NotImplementedError


@dataclass(frozen=True)
class UrlVerification(FeishuEvent):
    """The challenge Feishu sends when a request URL is saved (protocol.md §4)."""

    challenge: str = ""
    verification_token: str | None = None

    @property
    def event_type(self) -> str:
        return URL_VERIFICATION

    @property
    def token(self) -> str | None:
        return self.verification_token

    @property
    def dedup_key(self) -> str | None:
        return None


@dataclass(frozen=True)
class EventHeader:
    """``header`` of a v2 envelope. ``create_time`` is an opaque numeric string (µs or ms, §1)."""

    event_id: str | None
    event_type: str
    token: str | None
    create_time: str | None
    app_id: str | None
    tenant_key: str | None

    @classmethod
    def from_dict(cls, header: Mapping[str, Any]) -> EventHeader:
        return cls(
            event_id=_str_or_none(header.get("event_id")),
            event_type=str(header["event_type"]),
            token=_str_or_none(header.get("token")),
            create_time=_str_or_none(header.get("create_time")),
            app_id=_str_or_none(header.get("app_id")),
            tenant_key=_str_or_none(header.get("tenant_key")),
        )


@dataclass(frozen=True)
class EventV2(FeishuEvent):
    """A schema 2.0 event: ``header`` + ``event`` (protocol.md §1)."""

    header: EventHeader = field(default_factory=lambda: EventHeader(None, "", None, None, None, None))
    event: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def event_type(self) -> str:
        return self.header.event_type

    @property
    def token(self) -> str | None:
        return self.header.token

    @property
    def event_id(self) -> str | None:
        return self.header.event_id

    @property
    def create_time(self) -> str | None:
        """``header.create_time`` (when Feishu produced the event)."""
        return self.header.create_time

    @property
    def app_id(self) -> str | None:
        return self.header.app_id

    @property
    def tenant_key(self) -> str | None:
        return self.header.tenant_key

    @property
    def dedup_key(self) -> str | None:
        return self.header.event_id


def _parse_content(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        try:
            parsed = json.loads(content)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


@dataclass(frozen=True)
class MessageEvent(EventV2):
    """``im.message.receive_v1`` with accessors for the message and its sender.

    ``content`` is the parsed JSON of ``event.message.content`` (``{}`` when it is not a JSON object);
    :attr:`body` is it typed (:mod:`wslarkbot.content`), :meth:`mentions_bot` / :attr:`text_without_mentions`
    handle group-chat @mentions.
    """

    message_id: str = ""
    chat_id: str | None = None
    chat_type: str | None = None
    message_type: str | None = None
    content: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def dedup_key(self) -> str | None:
        # protocol.md §5: "如有幂等需求请使用 message_id 去重，不要依赖 event_id"
        return self.message_id

    @property
    def message(self) -> dict[str, Any]:
        """``event.message`` as Feishu sent it."""
        return _dict(self.event.get("message"))

    @property
    def text(self) -> str | None:
        """The text of a ``text`` message (mention placeholders like ``@_user_1`` left in), else None."""
        return _str_or_none(self.content.get("text")) if self.message_type == "text" else None

    @property
    def mentions(self) -> list[dict[str, Any]]:
        """``message.mentions`` as sent (dicts); :attr:`mention_list` has them typed."""
        mentions = self.message.get("mentions")
        return [m for m in mentions if isinstance(m, dict)] if isinstance(mentions, list) else []

    @property
    def mention_list(self) -> list[_content.Mention]:
        """``message.mentions`` as :class:`~wslarkbot.content.Mention` objects."""
        return _content.parse_mentions(self.message.get("mentions"))

    def mentions_bot(self, bot_open_id: str | None = None, *, bot_name: str | None = None) -> bool:
        """Whether the bot is @mentioned: by ``bot_open_id`` when given, else by ``bot_name``, else any
        mention counts (see :mod:`wslarkbot.content` for why)."""
        return _content.mentions_bot(self.mention_list, bot_open_id, bot_name=bot_name)

    @property
    def is_mentioned(self) -> bool:
        """:meth:`mentions_bot` without identity: someone (not @all) is mentioned."""
        return self.mentions_bot()

    @property
    def is_group(self) -> bool:
        """A group chat (``chat_type`` ``group``); False for p2p."""
        return self.chat_type == "group"

    @property
    def text_without_mentions(self) -> str | None:
        """:attr:`text` without ``@_user_N`` / ``@_all`` placeholders, trimmed; None when not text."""
        text = self.text
        return None if text is None else _content.strip_mentions(text)

    @property
    def body(self) -> _content.ReceivedContent:
        """The typed content: ``ReceivedText``, ``ReceivedPost``, ``ReceivedImage``, ``ReceivedFile``,
        ``ReceivedCard`` or ``ReceivedOther`` (:mod:`wslarkbot.content`)."""
        return _content.parse_content(self.message_type, self.content)

    @property
    def message_create_time(self) -> str | None:
        """``event.message.create_time`` (ms); :attr:`create_time` is the header's."""
        return _str_or_none(self.message.get("create_time"))

    @property
    def sender(self) -> dict[str, Any]:
        return _dict(self.event.get("sender"))

    @property
    def sender_type(self) -> str | None:
        return _str_or_none(self.sender.get("sender_type"))

    @property
    def sender_open_id(self) -> str | None:
        return _str_or_none(_dict(self.sender.get("sender_id")).get("open_id"))


@dataclass(frozen=True)
class CallbackV2(EventV2):
    """A v2 callback (``url.preview.get``, ...): Feishu shows the response body to the user (§5, §6)."""

    is_callback: ClassVar[bool] = True

    @property
    def dedup_key(self) -> str | None:
        return self.header.event_id or f"sha256:{_canonical_hash(self.raw)}"

    @property
    def operator(self) -> dict[str, Any]:
        return _dict(self.event.get("operator"))

    @property
    def open_id(self) -> str | None:
        """The operator's open_id."""
        return _str_or_none(self.operator.get("open_id"))

    @property
    def context(self) -> dict[str, Any]:
        return _dict(self.event.get("context"))

    @property
    def open_message_id(self) -> str | None:
        return _str_or_none(self.context.get("open_message_id"))

    @property
    def open_chat_id(self) -> str | None:
        return _str_or_none(self.context.get("open_chat_id"))


@dataclass(frozen=True)
class CardAction(CallbackV2):
    """``card.action.trigger`` (protocol.md §6a); respond ``{"toast": ..., "card": ...}`` or ``{}``."""

    @property
    def action(self) -> dict[str, Any]:
        return _dict(self.event.get("action"))

    @property
    def value(self) -> Any:
        """``action.value`` as set on the card element."""
        return self.action.get("value")

    @property
    def tag(self) -> str | None:
        return _str_or_none(self.action.get("tag"))

    @property
    def form_value(self) -> dict[str, Any]:
        return _dict(self.action.get("form_value"))

    @property
    def card_token(self) -> str | None:
        """The ``c-...`` token for a delayed card update (30 min, 2 uses), not the Verification Token."""
        return _str_or_none(self.event.get("token"))


@dataclass(frozen=True)
class EventV1(FeishuEvent):
    """A v1 event: ``{"uuid", "ts", "token", "type": "event_callback", "event": {"type": ...}}``."""

    uuid: str = ""
    ts: str | None = None
    event: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def event_type(self) -> str:
        return str(self.event.get("type", ""))

    @property
    def token(self) -> str | None:
        return _str_or_none(self.raw.get("token"))

    @property
    def dedup_key(self) -> str | None:
        return self.uuid


@dataclass(frozen=True)
class LegacyCardAction(FeishuEvent):
    """A legacy card callback, ``card.action.trigger_v1`` (protocol.md §6b): a flat body, never encrypted.

    Its ``token`` field is the card-update token ``c-...``, so :attr:`token` (the Verification Token) is
    None: legacy callbacks are authenticated by their sha1 signature alone.
    """

    is_callback: ClassVar[bool] = True

    open_message_id: str = ""
    action: dict[str, Any] = field(default_factory=dict)
    open_id: str | None = None
    user_id: str | None = None
    open_chat_id: str | None = None
    tenant_key: str | None = None
    card_token: str | None = None

    @property
    def event_type(self) -> str:
        return LEGACY_CARD_ACTION

    @property
    def token(self) -> str | None:
        return None

    @property
    def value(self) -> Any:
        return self.action.get("value")

    @property
    def tag(self) -> str | None:
        return _str_or_none(self.action.get("tag"))

    @property
    def option(self) -> str | None:
        return _str_or_none(self.action.get("option"))

    @property
    def form_value(self) -> dict[str, Any]:
        return _dict(self.action.get("form_value"))

    @property
    def dedup_key(self) -> str | None:
        return f"{self.open_message_id}:{self.card_token or ''}:{_canonical_hash(self.action)[:32]}"


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
