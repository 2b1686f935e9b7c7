"""The fake OpenAPI's messages: create, reply, PATCH, read and delayed card updates; no I/O.

:class:`MessageStore` is a part of :class:`~wslarkbot.sim.openapi_state.OpenAPIState`, which calls it with
its lock held, after authorising the request; each method returns the ``data`` answer or raises
:class:`OpenAPIFailure` (protocol.md §8: create, reply, PATCH rules; §11: the delayed card update).
"""

from __future__ import annotations

import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..exceptions import WslarkbotError

__all__ = ["MessageStore", "OpenAPIFailure", "StoredMessage", "new_id"]

CARD_TOKEN_LIFETIME = 1800
CARD_TOKEN_USES = 2
UUID_WINDOW = 3600
PATCH_MAX_AGE = 14 * 86400
CONTENT_LIMITS = {"text": 150 * 1024, "post": 30 * 1024, "interactive": 30 * 1024}
MSG_TYPES = frozenset(
    {
        "text",
        "post",
        "image",
        "file",
        "audio",
        "media",
        "sticker",
        "interactive",
        "share_chat",
        "share_user",
        "system",
    }
)
RECEIVE_ID_TYPES = frozenset({"open_id", "user_id", "union_id", "email", "chat_id"})

CODE_VALIDATION = 99992402  # "field validation failed"
CODE_BAD_PARAM = 230001
CODE_FREQUENCY = 230020
CODE_TOO_LONG = 230025
CODE_TOO_OLD = 230031
CODE_CARD_TOKEN = 230001  # chosen by the fake: the card/update token is unknown, expired or used up


class OpenAPIFailure(WslarkbotError):
    """An error answer: ``{"code", "msg"}`` with HTTP ``status`` (400 for business errors) and ``headers``."""

    def __init__(self, code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status, self.headers = code, msg, status, headers or {}


def new_id(prefix: str) -> str:
    """A random Feishu-looking id: ``prefix`` and 32 hex digits."""
    return prefix + secrets.token_hex(16)


@dataclass
class StoredMessage:
    """A message sent by an app. ``contents`` is the history of ``content`` strings (PATCH appends)."""

    message_id: str
    app_id: str
    msg_type: str
    chat_id: str
    contents: list[str]
    create_time: int  # ms
    receive_id: str | None = None
    receive_id_type: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    thread_id: str | None = None

    @property
    def content(self) -> Any:
        """The latest content, decoded."""
        return json.loads(self.contents[-1])


@dataclass
class _CardToken:
    app_id: str | None
    message_id: str | None
    expires_at: float
    uses: int = 0


class MessageStore:
    """Messages and card tokens of every app. Not thread-safe by itself: the owner holds a lock.

    Args:
        throttle: ``throttle(app_id)`` raises :class:`OpenAPIFailure` when the app sends too fast.
        tenant_key: ``tenant_key(app_id)`` for the ``sender`` of a message view.
        clock: epoch seconds (``uuid`` windows, message age, card-token expiry).
        monotonic: the clock of the per-message PATCH limit.
        patch_qps: PATCHes per second per message before 230020.
    """

    def __init__(
        self,
        throttle: Callable[[str], None],
        tenant_key: Callable[[str], str],
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        patch_qps: int = 5,
    ) -> None:
        self._throttle = throttle
        self._tenant_key = tenant_key
        self._clock = clock
        self._monotonic = monotonic
        self._patch_qps = patch_qps
        self.messages: dict[str, StoredMessage] = {}
        #: raises OpenAPIFailure for a card Feishu cannot build (set by the owner: openapi_cards.py)
        self.check_card: Callable[[Any], None] | None = None
        self.card_tokens: dict[str, _CardToken] = {}
        self._uuids: dict[tuple[str, str], tuple[str, float]] = {}
        self._patches: dict[str, deque[float]] = {}

    def add_card_token(self, token: str, app_id: str | None, message_id: str | None) -> None:
        """Register a card token: valid 30 min, 2 delayed updates."""
        self.card_tokens[token] = _CardToken(app_id, message_id, self._clock() + CARD_TOKEN_LIFETIME)

    def _content(self, body: Any, msg_type: str) -> str:
        content = body.get("content")
        if not isinstance(content, str):
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: content must be a JSON string")
        try:
            decoded = json.loads(content)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            raise OpenAPIFailure(CODE_BAD_PARAM, "invalid content: not a JSON object")
        limit = CONTENT_LIMITS.get(msg_type)
        if limit is not None and len(content.encode()) > limit:
            raise OpenAPIFailure(CODE_TOO_LONG, "the message content is too long")
        if msg_type == "interactive" and self.check_card is not None:
            self.check_card(decoded)
        return content

    def _check_uuid(self, app_id: str, body: dict[str, Any]) -> StoredMessage | None:
        uuid = body.get("uuid")
        if uuid is None:
            return None
        if not isinstance(uuid, str) or not 0 < len(uuid) <= 50:
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: uuid")
        seen = self._uuids.get((app_id, uuid))
        if seen is not None and seen[1] > self._clock():
            return self.messages.get(seen[0])
        return None

    def _store(self, app_id: str, body: dict[str, Any], msg: StoredMessage) -> dict[str, Any]:
        self.messages[msg.message_id] = msg
        if isinstance(body.get("uuid"), str):
            self._uuids[(app_id, body["uuid"])] = (msg.message_id, self._clock() + UUID_WINDOW)
        return {"code": 0, "msg": "success", "data": self.view(msg)}

    def _message_fields(self, app_id: str, body: Any) -> tuple[dict[str, Any], str, str]:
        if not isinstance(body, dict):
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: body")
        msg_type = body.get("msg_type")
        if msg_type not in MSG_TYPES:
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: msg_type")
        self._throttle(app_id)
        return body, str(msg_type), self._content(body, str(msg_type))

    def create(self, app_id: str, query: Any, body: Any) -> dict[str, Any]:
        receive_id_type = query.get("receive_id_type")
        if receive_id_type not in RECEIVE_ID_TYPES:
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: receive_id_type is required")
        body, msg_type, content = self._message_fields(app_id, body)
        receive_id = body.get("receive_id")
        if not isinstance(receive_id, str) or not receive_id:
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: receive_id")
        dup = self._check_uuid(app_id, body)
        if dup is not None:
            return {"code": 0, "msg": "success", "data": self.view(dup)}
        chat_id = receive_id if receive_id_type == "chat_id" else "oc_p2p_" + receive_id
        return self._store(
            app_id,
            body,
            StoredMessage(
                new_id("om_"),
                app_id,
                msg_type,
                chat_id,
                [content],
                int(self._clock() * 1000),
                receive_id=receive_id,
                receive_id_type=receive_id_type,
            ),
        )

    def reply(self, app_id: str, message_id: str, body: Any) -> dict[str, Any]:
        body, msg_type, content = self._message_fields(app_id, body)
        dup = self._check_uuid(app_id, body)
        if dup is not None:
            return {"code": 0, "msg": "success", "data": self.view(dup)}
        parent = self.messages.get(message_id)  # replies to user messages the fake never saw are fine
        thread_id = parent.thread_id if parent else None
        if body.get("reply_in_thread") is True and thread_id is None:
            thread_id = new_id("omt_")[:16]
            if parent is not None:
                parent.thread_id = thread_id
        root_id = (parent.root_id or parent.message_id) if parent else message_id
        return self._store(
            app_id,
            body,
            StoredMessage(
                new_id("om_"),
                app_id,
                msg_type,
                parent.chat_id if parent else "oc_fake",
                [content],
                int(self._clock() * 1000),
                parent_id=message_id,
                root_id=root_id,
                thread_id=thread_id,
            ),
        )

    def _get(self, message_id: str) -> StoredMessage:
        msg = self.messages.get(message_id)
        if msg is None:
            raise OpenAPIFailure(CODE_BAD_PARAM, "invalid message_id")
        return msg

    def patch(self, app_id: str, message_id: str, body: Any) -> dict[str, Any]:
        msg = self._get(message_id)
        if msg.msg_type != "interactive" or msg.app_id != app_id:
            raise OpenAPIFailure(CODE_BAD_PARAM, "only interactive messages sent by this app can be updated")
        if self._clock() * 1000 - msg.create_time > PATCH_MAX_AGE * 1000:
            raise OpenAPIFailure(CODE_TOO_OLD, "the message was sent more than 14 days ago")
        if not isinstance(body, dict):
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: body")
        content = self._content(body, "interactive")
        self._throttle(app_id)
        stamps = self._patches.setdefault(message_id, deque())
        now = self._monotonic()
        while stamps and now - stamps[0] >= 1.0:
            stamps.popleft()
        if len(stamps) >= self._patch_qps:
            raise OpenAPIFailure(CODE_FREQUENCY, "frequency limit: 5 QPS per message")
        stamps.append(now)
        msg.contents.append(content)
        return {"code": 0, "data": {}, "msg": "ok"}

    def read(self, app_id: str, message_id: str) -> dict[str, Any]:
        return {"code": 0, "msg": "success", "data": {"items": [self.view(self._get(message_id))]}}

    def card_update(self, app_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("card"), dict):
            raise OpenAPIFailure(
                CODE_VALIDATION, "field validation failed: token and card (an object) are required"
            )
        ct = self.card_tokens.get(str(body.get("token")))
        if ct is None or ct.expires_at <= self._clock() or ct.uses >= CARD_TOKEN_USES:
            raise OpenAPIFailure(CODE_CARD_TOKEN, "card token is unknown, expired or used up")
        ct.uses += 1
        if ct.message_id in self.messages:
            self.messages[ct.message_id].contents.append(json.dumps(body["card"], ensure_ascii=False))
        return {"code": 0, "msg": "ok", "data": {}}

    def view(self, msg: StoredMessage) -> dict[str, Any]:
        view: dict[str, Any] = {
            "message_id": msg.message_id,
            "msg_type": msg.msg_type,
            "chat_id": msg.chat_id,
            "create_time": str(msg.create_time),
            "update_time": str(msg.create_time),
            "deleted": False,
            "updated": len(msg.contents) > 1,
            "sender": {
                "id": msg.app_id,
                "id_type": "app_id",
                "sender_type": "app",
                "tenant_key": self._tenant_key(msg.app_id),
            },
            "body": {"content": msg.contents[-1]},
        }
        for key in ("root_id", "parent_id", "thread_id"):
            if getattr(msg, key):
                view[key] = getattr(msg, key)
        if msg.parent_id:
            view["upper_message_id"] = msg.parent_id
        return view
