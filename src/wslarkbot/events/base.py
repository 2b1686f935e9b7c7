"""The payload types of :mod:`wslarkbot.events` (all but :class:`~wslarkbot.events.MessageEvent`, which has
its own module, :mod:`wslarkbot.events.message`). No I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

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
    def tenant_key(self) -> str | None:
        """The tenant the request comes from (a store app serves many), when the payload says."""
        return None

    @property
    def dedup_key(self) -> str | None:
        """A stable id for deduplication (:mod:`wslarkbot.events`); None when nothing is stable."""
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
    def tenant_key(self) -> str | None:
        return _str_or_none(self.event.get("tenant_key"))

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
