"""Builders of the payloads Feishu pushes, in the exact shapes of the official samples. No I/O.

Every builder returns a fresh ``dict`` (the plaintext JSON, before encryption) with fresh ids, and the
app's Verification Token where Feishu puts it. Shapes follow ``tests/samples/*.json`` (protocol.md §1, §4,
§6): the v2 envelope ``{"schema":"2.0","header":{...},"event":{...}}``, the v1 envelope
``{"ts","uuid","token","type":"event_callback","event":{"type":...}}``, the flat legacy card callback.

Example::

    app = SimApp.random()
    payload = text_message(app, "你好", chat_type="group", mentions=[mention(app.bot_name, app.bot_open_id)])
"""

from __future__ import annotations

import json
import time
import uuid as uuid_mod
from collections.abc import Mapping, Sequence
from typing import Any

from .app import SimApp, new_id

__all__ = [
    "app_ticket",
    "card_action",
    "event_key",
    "event_v1",
    "event_v2",
    "legacy_card_action",
    "mention",
    "operator",
    "text_message",
    "url_preview",
    "url_verification",
    "with_new_event_id",
]

_USER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 13_2_1) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/101.0.4951.53 Safari/537.36 Lark/6.7.5 LarkLocale/en_US ttnet SDK-Version/6.7.8"
)


def _now_ms() -> str:
    return str(time.time_ns() // 1_000_000)


def _now_us() -> str:
    return str(time.time_ns() // 1_000)


def event_v2(
    app: SimApp,
    event_type: str,
    event: Mapping[str, Any],
    *,
    event_id: str | None = None,
    create_time: str | None = None,
) -> dict[str, Any]:
    """A schema 2.0 envelope (protocol.md §1) with a fresh ``event_id`` and ``header.token``.

    ``create_time`` defaults to microseconds as in the overview sample; its unit varies between
    Feishu's samples, so treat it as an opaque string.
    """
    return {
        "schema": "2.0",
        "header": {
            "event_id": event_id or uuid_mod.uuid4().hex,
            "token": app.verification_token,
            "create_time": create_time or _now_us(),
            "event_type": event_type,
            "tenant_key": app.tenant_key,
            "app_id": app.app_id,
        },
        "event": dict(event),
    }


def event_v1(
    app: SimApp, event: Mapping[str, Any], *, uuid: str | None = None, ts: str | None = None
) -> dict[str, Any]:
    """A v1.0 envelope (protocol.md §1): ``event`` must carry its ``type``; fresh ``uuid``."""
    if "type" not in event:
        raise ValueError("a v1 event needs event['type']")
    return {
        "ts": ts or f"{time.time():.7f}",
        "uuid": uuid or uuid_mod.uuid4().hex,
        "token": app.verification_token,
        "type": "event_callback",
        "event": dict(event),
    }


def app_ticket(app: SimApp, ticket: str | None = None) -> dict[str, Any]:
    """The v1 ``app_ticket`` event marketplace apps receive every hour (samples/app_ticket.v1.json)."""
    return event_v1(app, {"app_id": app.app_id, "app_ticket": ticket or new_id("", 32), "type": "app_ticket"})


def operator(app: SimApp, open_id: str | None = None, user_id: str | None = None) -> dict[str, str]:
    """The ``operator`` / ``sender_id`` ids of a user of the app's tenant."""
    return {
        "tenant_key": app.tenant_key,
        "user_id": user_id or new_id("", 8),
        "open_id": open_id or new_id("ou_"),
        "union_id": new_id("on_"),
    }


def mention(name: str, open_id: str | None = None, *, index: int = 1, tenant_key: str = "") -> dict[str, Any]:
    """One entry of ``message.mentions``; the text refers to it as ``@_user_<index>``."""
    return {
        "key": f"@_user_{index}",
        "id": {"union_id": new_id("on_"), "user_id": new_id("", 8), "open_id": open_id or new_id("ou_")},
        "name": name,
        "tenant_key": tenant_key,
    }


def text_message(
    app: SimApp,
    text: str,
    *,
    chat_type: str = "p2p",
    chat_id: str | None = None,
    sender_open_id: str | None = None,
    sender_user_id: str | None = None,
    mentions: Sequence[Mapping[str, Any]] | None = None,
    at_bot: bool = False,
    message_id: str | None = None,
    create_time_ms: int | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """An ``im.message.receive_v1`` event carrying a text message (samples/im.message.receive_v1.json).

    ``content`` is a JSON *string* ``{"text": ...}``, as Feishu sends it. ``mentions`` is omitted when
    empty; ``root_id``/``parent_id`` only appear for replies. Times are milliseconds here, as in the sample.
    ``at_bot=True`` @mentions the app's bot: the text gets an ``@_user_1 `` prefix and ``mentions`` the bot.
    """
    if chat_type not in ("p2p", "group"):
        raise ValueError("chat_type must be 'p2p' or 'group'")
    if at_bot:
        if mentions:
            raise ValueError("pass either at_bot=True or mentions, not both")
        text = "@_user_1 " + text
        mentions = [mention(app.bot_name, app.bot_open_id, tenant_key=app.tenant_key)]
    created = str(create_time_ms) if create_time_ms is not None else _now_ms()
    sender = operator(app, sender_open_id, sender_user_id)
    message: dict[str, Any] = {"message_id": message_id or new_id("om_")}
    if root_id:
        message["root_id"] = root_id
    if parent_id or root_id:
        message["parent_id"] = parent_id or root_id
    message.update(
        {
            "create_time": created,
            "update_time": created,
            "chat_id": chat_id or new_id("oc_"),
            "chat_type": chat_type,
            "message_type": "text",
            "content": json.dumps({"text": text}, ensure_ascii=False, separators=(",", ":")),
        }
    )
    if mentions:
        message["mentions"] = [dict(m) for m in mentions]
    message["user_agent"] = _USER_AGENT
    event = {
        "sender": {
            "sender_id": {k: sender[k] for k in ("union_id", "user_id", "open_id")},
            "sender_type": "user",
            "tenant_key": app.tenant_key,
        },
        "message": message,
    }
    return event_v2(app, "im.message.receive_v1", event, event_id=event_id, create_time=created)


def card_action(
    app: SimApp,
    value: Mapping[str, Any] | None = None,
    *,
    tag: str = "button",
    open_message_id: str | None = None,
    open_chat_id: str | None = None,
    form_value: Mapping[str, Any] | None = None,
    name: str | None = None,
    operator_open_id: str | None = None,
    token: str | None = None,
    timezone: str = "Asia/Shanghai",
    event_id: str | None = None,
) -> dict[str, Any]:
    """A ``card.action.trigger`` callback (samples/card.action.trigger.json, protocol.md §6a).

    ``event.token`` is a fresh card-update token ``c-...`` unless given.
    """
    action: dict[str, Any] = {"value": dict(value or {}), "tag": tag, "timezone": timezone}
    if form_value is not None:
        action["form_value"] = dict(form_value)
    if name is not None:
        action["name"] = name
    event = {
        "operator": operator(app, operator_open_id),
        "token": token or "c-" + new_id("", 40),
        "action": action,
        "host": "im_message",
        "context": {
            "open_message_id": open_message_id or new_id("om_"),
            "open_chat_id": open_chat_id or new_id("oc_"),
        },
    }
    return event_v2(app, "card.action.trigger", event, event_id=event_id)


def legacy_card_action(
    app: SimApp,
    value: Mapping[str, Any] | None = None,
    *,
    tag: str = "button",
    open_id: str | None = None,
    user_id: str | None = None,
    open_message_id: str | None = None,
    open_chat_id: str | None = None,
    token: str | None = None,
    form_value: Mapping[str, Any] | None = None,
    option: str | None = None,
) -> dict[str, Any]:
    """A legacy ``card.action.trigger_v1`` body, flat (samples/card.action.trigger_v1.legacy.json)."""
    action: dict[str, Any] = {"value": dict(value or {}), "tag": tag}
    if form_value is not None:
        action["form_value"] = dict(form_value)
    if option is not None:
        action["option"] = option
    return {
        "open_id": open_id or new_id("ou_"),
        "user_id": user_id or new_id("", 8),
        "open_message_id": open_message_id or new_id("om_"),
        "open_chat_id": open_chat_id or new_id("oc_"),
        "tenant_key": app.tenant_key,
        "token": token or "c-" + new_id("", 40),
        "action": action,
    }


def url_preview(
    app: SimApp,
    url: str,
    *,
    open_message_id: str | None = None,
    open_chat_id: str | None = None,
    operator_open_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A ``url.preview.get`` callback (samples/url.preview.get.json).

    The documented sample has no ``header.event_id``; we add one like every other v2 envelope.
    """
    op = operator(app, operator_open_id)
    del op["union_id"]
    event = {
        "operator": op,
        "host": "im_message",
        "context": {
            "url": url,
            "preview_token": str(uuid_mod.uuid4()),
            "open_message_id": open_message_id or new_id("om_"),
            "open_chat_id": open_chat_id or new_id("oc_"),
        },
    }
    return event_v2(app, "url.preview.get", event, event_id=event_id)


def url_verification(app: SimApp, challenge: str | None = None) -> dict[str, str]:
    """The challenge sent when a request URL is saved (samples/url_verification.plain.json)."""
    return {
        "challenge": challenge or str(uuid_mod.uuid4()),
        "token": app.verification_token,
        "type": "url_verification",
    }


def event_key(payload: Mapping[str, Any]) -> str | None:
    """The id Feishu keeps across retries: ``header.event_id`` (v2) or ``uuid`` (v1); ``None`` otherwise."""
    header = payload.get("header")
    if isinstance(header, Mapping) and header.get("event_id"):
        return str(header["event_id"])
    if payload.get("uuid"):
        return str(payload["uuid"])
    return None


def with_new_event_id(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an event under a fresh ``event_id`` (v2) or ``uuid`` (v1), everything else identical.

    Models Feishu's "same message, different event_id" duplicates (protocol.md §5).
    """
    copy: dict[str, Any] = json.loads(json.dumps(payload))
    if isinstance(copy.get("header"), dict):
        copy["header"]["event_id"] = uuid_mod.uuid4().hex
    elif "uuid" in copy:
        copy["uuid"] = uuid_mod.uuid4().hex
    else:
        raise ValueError("payload has neither header.event_id nor uuid")
    return copy
