"""The fake OpenAPI beyond sending messages: uploads, resources, recall, forward, reactions, chats, users,
urgent; no I/O (docs/openapi.md has each shape and its source).

:class:`ExtrasStore` is a part of :class:`~wslarkbot.sim.openapi_state.OpenAPIState`, called with its lock
held after the request was authorised. Each method returns the answer body, or a :class:`Download` for a
file, or raises :class:`~.openapi_messages.OpenAPIFailure`. What Feishu refuses, the fake refuses: an empty
or oversized upload, an unknown ``file_type``, a resource that is not in the message, recalling another
app's message, an unknown emoji, a ``page_size`` over the maximum.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .openapi_messages import CODE_BAD_PARAM, CODE_VALIDATION, MessageStore, OpenAPIFailure, new_id

__all__ = ["Download", "ExtrasStore", "Upload"]

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_FILE_BYTES = 30 * 1024 * 1024
FILE_TYPES = frozenset({"opus", "mp4", "pdf", "doc", "xls", "ppt", "stream"})
#: a few of Feishu's emoji names (the full list is long; these are the ones tests use)
EMOJI = frozenset({"THUMBSUP", "SMILE", "OK", "HEART", "DONE", "JIAYI", "LAUGH", "CLAP"})
MAX_PAGE_SIZE = 100

# Codes protocol.md does not fix; chosen by the fake, documented in docs/openapi.md.
CODE_FILE_EMPTY = 234010
CODE_FILE_TOO_BIG = 234006
CODE_RESOURCE_MISMATCH = 234003
CODE_NOT_SENDER = 230026
CODE_NOT_FOUND = 230011
CODE_USER_NOT_FOUND = 41050


@dataclass(frozen=True)
class Upload:
    """An uploaded image or file: the bytes a download returns."""

    key: str
    app_id: str
    content: bytes = field(repr=False)
    content_type: str
    filename: str


@dataclass(frozen=True)
class Download:
    """A file answer (``GET .../resources/:file_key``)."""

    content: bytes = field(repr=False)
    content_type: str
    filename: str


@dataclass(frozen=True)
class Part:
    """One part of a multipart body."""

    value: bytes = field(repr=False)
    filename: str | None = None
    content_type: str = "text/plain"

    @property
    def text(self) -> str:
        return self.value.decode("utf-8", "replace")


def parse_multipart(content_type: str, body: bytes) -> dict[str, Part]:
    """The fields of a ``multipart/form-data`` body, by name.

    Raises:
        OpenAPIFailure: not multipart, or a body that does not parse.
    """
    import email.parser
    import email.policy

    if not content_type.lower().startswith("multipart/form-data"):
        raise OpenAPIFailure(CODE_VALIDATION, "this endpoint takes multipart/form-data")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise OpenAPIFailure(CODE_VALIDATION, "malformed multipart body")
    out: dict[str, Part] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        out[name] = Part(
            payload if isinstance(payload, bytes) else b"",
            part.get_filename(),
            part.get_content_type(),
        )
    return out


def _page(items: list[Any], query: Mapping[str, str]) -> dict[str, Any]:
    try:
        size = int(query.get("page_size", "20"))
        start = int(query.get("page_token") or 0)
    except ValueError:
        raise OpenAPIFailure(CODE_VALIDATION, "page_size and page_token must be integers") from None
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise OpenAPIFailure(CODE_VALIDATION, f"page_size must be 1..{MAX_PAGE_SIZE}")
    chunk = items[start : start + size]
    more = start + size < len(items)
    return {"items": chunk, "has_more": more, "page_token": str(start + size) if more else ""}


def _ok(data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": 0, "msg": "success", "data": data or {}}


class ExtrasStore:
    """Uploads, reactions, chats and users of the fake. Not thread-safe by itself: the owner holds a lock.

    Args:
        messages: the fake's messages (recall, forward, reactions and downloads refer to them).
        clock: epoch seconds.
    """

    def __init__(self, messages: MessageStore, clock: Callable[[], float]) -> None:
        self._messages = messages
        self._clock = clock
        self.uploads: dict[str, Upload] = {}
        #: message_id -> reactions (reaction_id, emoji, operator app id)
        self.reactions: dict[str, list[dict[str, Any]]] = {}
        self.chats: dict[str, dict[str, Any]] = {}
        self.members: dict[str, list[dict[str, Any]]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.recalled: set[str] = set()
        self.urgent: list[tuple[str, str, list[str]]] = []

    # -- seeding ------------------------------------------------------------------------------------

    def add_upload(self, key: str, app_id: str, content: bytes, content_type: str, filename: str) -> None:
        self.uploads[key] = Upload(key, app_id, content, content_type, filename)

    # -- uploads ------------------------------------------------------------------------------------

    def upload(self, app_id: str, kind: str, parts: Mapping[str, Part]) -> dict[str, Any]:
        """``POST /open-apis/im/v1/images`` (``kind`` image) or ``.../files`` (file)."""
        field_name, limit = ("image", MAX_IMAGE_BYTES) if kind == "image" else ("file", MAX_FILE_BYTES)
        part = parts.get(field_name)
        if part is None or part.filename is None:
            raise OpenAPIFailure(CODE_VALIDATION, f"field validation failed: {field_name} (a file)")
        if kind == "image":
            if parts.get("image_type", Part(b"")).text not in ("message", "avatar"):
                raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: image_type")
            if not part.content_type.startswith("image/"):
                raise OpenAPIFailure(CODE_VALIDATION, "image must be an image (JPEG, PNG, WEBP, GIF...)")
        else:
            if parts.get("file_type", Part(b"")).text not in FILE_TYPES:
                raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: file_type")
            if not parts.get("file_name", Part(b"")).text:
                raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: file_name")
        if not part.value:
            raise OpenAPIFailure(CODE_FILE_EMPTY, "file is empty")
        if len(part.value) > limit:
            raise OpenAPIFailure(CODE_FILE_TOO_BIG, f"file is larger than {limit} bytes")
        key = ("img_v3_" if kind == "image" else "file_v3_") + secrets.token_hex(12)
        name = parts["file_name"].text if kind == "file" else part.filename
        self.uploads[key] = Upload(key, app_id, part.value, part.content_type, name)
        return _ok({"image_key": key} if kind == "image" else {"file_key": key})

    def download(self, app_id: str, message_id: str, file_key: str, query: Mapping[str, str]) -> Download:
        """``GET /open-apis/im/v1/messages/:message_id/resources/:file_key?type=image|file``."""
        kind = query.get("type")
        if kind not in ("image", "file"):
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: type must be image or file")
        msg = self._messages.messages.get(message_id)
        if msg is None:
            raise OpenAPIFailure(CODE_NOT_FOUND, "message not found")
        if file_key not in msg.contents[-1]:
            raise OpenAPIFailure(CODE_RESOURCE_MISMATCH, "the resource does not belong to the message")
        upload = self.uploads.get(file_key)
        if upload is None:
            raise OpenAPIFailure(CODE_NOT_FOUND, "resource not found")
        if (kind == "image") != file_key.startswith("img_"):
            raise OpenAPIFailure(CODE_RESOURCE_MISMATCH, "type does not match the resource")
        return Download(upload.content, upload.content_type, upload.filename)

    # -- messages -----------------------------------------------------------------------------------

    def recall(self, app_id: str, message_id: str) -> dict[str, Any]:
        msg = self._messages.messages.get(message_id)
        if msg is None or message_id in self.recalled:
            raise OpenAPIFailure(CODE_NOT_FOUND, "message not found or already recalled")
        if msg.app_id != app_id:
            raise OpenAPIFailure(CODE_NOT_SENDER, "only the sender can recall a message")
        self.recalled.add(message_id)
        return _ok()

    def forward(self, app_id: str, message_id: str, query: Mapping[str, str], body: Any) -> dict[str, Any]:
        msg = self._messages.messages.get(message_id)
        if msg is None or message_id in self.recalled:
            raise OpenAPIFailure(CODE_NOT_FOUND, "message not found")
        if not isinstance(body, dict) or not body.get("receive_id"):
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: receive_id")
        create = {"receive_id": body["receive_id"], "msg_type": msg.msg_type, "content": msg.contents[-1]}
        return self._messages.create(app_id, query, create)

    # -- reactions ----------------------------------------------------------------------------------

    def add_reaction(self, app_id: str, message_id: str, body: Any) -> dict[str, Any]:
        self._existing(message_id)
        emoji = (body or {}).get("reaction_type", {}).get("emoji_type") if isinstance(body, dict) else None
        if emoji not in EMOJI:
            raise OpenAPIFailure(CODE_BAD_PARAM, f"invalid emoji_type {emoji!r}")
        reaction = {
            "reaction_id": new_id("ZCaCIjUBVVWSrm5L-3ZTw"),
            "operator": {"operator_id": app_id, "operator_type": "app"},
            "action_time": str(int(self._clock() * 1000)),
            "reaction_type": {"emoji_type": emoji},
        }
        self.reactions.setdefault(message_id, []).append(reaction)
        return _ok(reaction)

    def remove_reaction(self, app_id: str, message_id: str, reaction_id: str) -> dict[str, Any]:
        self._existing(message_id)
        found = [r for r in self.reactions.get(message_id, []) if r["reaction_id"] == reaction_id]
        if not found:
            raise OpenAPIFailure(CODE_NOT_FOUND, "reaction not found")
        if found[0]["operator"]["operator_id"] != app_id:
            raise OpenAPIFailure(CODE_NOT_SENDER, "only its operator can remove a reaction")
        self.reactions[message_id].remove(found[0])
        return _ok(found[0])

    def list_reactions(self, app_id: str, message_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        self._existing(message_id)
        emoji = query.get("reaction_type")
        items = [
            r
            for r in self.reactions.get(message_id, [])
            if not emoji or r["reaction_type"]["emoji_type"] == emoji
        ]
        return _ok(_page(items, query))

    def _existing(self, message_id: str) -> None:
        if message_id not in self._messages.messages or message_id in self.recalled:
            raise OpenAPIFailure(CODE_NOT_FOUND, "message not found")

    # -- chats and users ----------------------------------------------------------------------------

    def chat(self, app_id: str, chat_id: str) -> dict[str, Any]:
        if chat_id not in self.chats:
            raise OpenAPIFailure(CODE_NOT_FOUND, "chat not found or the bot is not in it")
        return _ok(self.chats[chat_id])

    def chat_members(self, app_id: str, chat_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        if chat_id not in self.chats:
            raise OpenAPIFailure(CODE_NOT_FOUND, "chat not found or the bot is not in it")
        id_type = query.get("member_id_type", "open_id")
        items = [
            {
                "member_id_type": id_type,
                "member_id": m.get(id_type, ""),
                "name": m["name"],
                "tenant_key": m["tenant_key"],
            }
            for m in self.members.get(chat_id, [])
        ]
        page = _page(items, query)
        page["member_total"] = len(items)
        return _ok(page)

    def user(self, app_id: str, user_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        id_type = query.get("user_id_type", "open_id")
        found = next((u for u in self.users.values() if u.get(id_type) == user_id), None)
        if found is None:
            raise OpenAPIFailure(CODE_USER_NOT_FOUND, "user not found")
        return _ok({"user": found})

    def urgent_call(
        self, app_id: str, message_id: str, kind: str, query: Mapping[str, str], body: Any
    ) -> dict[str, Any]:
        msg = self._messages.messages.get(message_id)
        if msg is None or message_id in self.recalled:
            raise OpenAPIFailure(CODE_NOT_FOUND, "message not found")
        if msg.app_id != app_id:
            raise OpenAPIFailure(CODE_NOT_SENDER, "only the sender can buzz a message")
        users = body.get("user_id_list") if isinstance(body, dict) else None
        if not isinstance(users, list) or not users:
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: user_id_list")
        id_type = query.get("user_id_type", "open_id")
        known = {u.get(id_type) for u in self.users.values()}
        self.urgent.append((message_id, kind, list(users)))
        return _ok({"invalid_user_id_list": [u for u in users if u not in known]})
