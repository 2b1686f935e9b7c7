"""Typed contents of received messages, and @mentions. No I/O.

``im.message.receive_v1`` carries ``message.content`` as a JSON string whose shape depends on
``message_type``; :func:`parse_content` turns the decoded object into one of::

    ReceivedText(text)                  text: {"text": "@_user_1 hello"}
    ReceivedPost(title, paragraphs)     post (rich text): {"title", "content": [[{"tag": ...}]]}
    ReceivedImage(image_key)            image: {"image_key": "img_v2_..."}
    ReceivedFile(file_key, file_name)   file: {"file_key", "file_name"}
    ReceivedCard(card)                  interactive: the card JSON
    ReceivedOther(msg_type, data)       anything else (audio, media, sticker, share_chat...)

(The ``Received*`` names keep them apart from the builders of *outgoing* contents in
:mod:`wslarkbot.messages`, ``TextContent``, ``PostContent``...)

Mentions: in group chats Feishu writes ``@_user_1`` placeholders into the text and lists them in
``message.mentions`` as ``{"key": "@_user_1", "id": {"open_id", "union_id", "user_id"}, "name", ...}``
(samples/im.message.receive_v1.json); ``@_all`` (everyone) has no entry there. :func:`mentions_bot` decides
whether the bot is among them, best evidence first:

1. ``bot_open_id``: the bot's own open_id (``GET /open-apis/bot/v3/info`` returns it) -- exact;
2. ``bot_name``: the app's name as shown in the chat -- good unless another member has the same name;
3. neither: *any* mention (not ``@_all``) counts. Feishu only delivers group messages that @mention the
   bot unless the app has the "read all group messages" permission, so with the default permission a
   group message that mentions anyone mentions the bot. Apps with that permission should pass 1 or 2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MENTION_ALL_KEY",
    "Mention",
    "ReceivedCard",
    "ReceivedContent",
    "ReceivedFile",
    "ReceivedImage",
    "ReceivedOther",
    "ReceivedPost",
    "ReceivedText",
    "mentions_bot",
    "parse_content",
    "parse_mentions",
    "replace_mentions",
    "strip_mentions",
]

#: The placeholder of an @everyone mention (it has no ``mentions`` entry).
MENTION_ALL_KEY = "@_all"
_PLACEHOLDER = re.compile(r"@_(?:user_\d+|all)\b")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Mention:
    """One entry of ``message.mentions``."""

    key: str
    name: str | None = None
    open_id: str | None = None
    user_id: str | None = None
    union_id: str | None = None
    tenant_key: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Mention:
        ids = data.get("id")
        ids = ids if isinstance(ids, Mapping) else {}
        return cls(
            key=str(data.get("key") or ""),
            name=_str(data.get("name")),
            open_id=_str(ids.get("open_id")),
            user_id=_str(ids.get("user_id")),
            union_id=_str(ids.get("union_id")),
            tenant_key=_str(data.get("tenant_key")),
        )

    @property
    def is_all(self) -> bool:
        """An @everyone mention."""
        return self.key == MENTION_ALL_KEY or self.user_id == "all"


def parse_mentions(raw: Any) -> list[Mention]:
    """``message.mentions`` as :class:`Mention` objects (entries that are not objects are skipped)."""
    if not isinstance(raw, list):
        return []
    return [Mention.from_dict(m) for m in raw if isinstance(m, Mapping)]


def mentions_bot(
    mentions: Iterable[Mention], bot_open_id: str | None = None, *, bot_name: str | None = None
) -> bool:
    """Whether the bot is @mentioned (rules in the module docstring).

    Args:
        mentions: the message's mentions.
        bot_open_id: the bot's open_id, when known (exact match).
        bot_name: the bot's display name, when its open_id is not known.
    """
    people = [m for m in mentions if not m.is_all]
    if bot_open_id:
        return any(m.open_id == bot_open_id for m in people)
    if bot_name:
        return any(m.name == bot_name for m in people)
    return bool(people)


def replace_mentions(text: str, mentions: Sequence[Mention], *, template: str = "@{name}") -> str:
    """Replace each ``@_user_N`` by ``template`` (``{name}``, ``{open_id}``); unknown keys stay."""
    by_key = {m.key: m for m in mentions}

    def sub(match: re.Match[str]) -> str:
        m = by_key.get(match.group(0))
        if m is None or not m.name:
            return "@all" if match.group(0) == MENTION_ALL_KEY else match.group(0)
        return template.format(name=m.name, open_id=m.open_id or "")

    return _PLACEHOLDER.sub(sub, text)


def strip_mentions(text: str) -> str:
    """``text`` without ``@_user_N`` / ``@_all`` placeholders, runs of spaces collapsed, trimmed."""
    return re.sub(r"[ \t]{2,}", " ", _PLACEHOLDER.sub("", text)).strip()


# -- contents ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedText:
    """``text``: the text with mention placeholders left in (see :func:`strip_mentions`)."""

    text: str
    msg_type: str = field(default="text", init=False)


@dataclass(frozen=True)
class ReceivedPost:
    """``post`` (rich text): ``paragraphs`` is a list of lines, each a list of elements such as
    ``{"tag": "text", "text"}``, ``{"tag": "a", "href", "text"}``, ``{"tag": "at", "user_id", "user_name"}``,
    ``{"tag": "img", "image_key"}``, ``{"tag": "code_block", "language", "text"}``."""

    title: str
    paragraphs: list[list[dict[str, Any]]]
    msg_type: str = field(default="post", init=False)

    @property
    def text(self) -> str:
        """Plain text: the title, then one line per paragraph; links keep their text, mentions become
        ``@name`` (or their placeholder), images and media are left out."""
        lines = [self.title] if self.title else []
        for paragraph in self.paragraphs:
            parts: list[str] = []
            for element in paragraph:
                tag = element.get("tag")
                if tag in ("text", "a", "code_block", "md"):
                    parts.append(str(element.get("text", "")))
                elif tag == "at":
                    name = element.get("user_name") or element.get("user_id") or ""
                    parts.append(name if str(name).startswith("@") else f"@{name}")
                elif tag == "emotion":
                    parts.append(f":{element.get('emoji_type', '')}:")
            lines.append("".join(parts))
        return "\n".join(lines)

    @property
    def image_keys(self) -> list[str]:
        """The ``image_key`` of every image in the post."""
        return [
            str(e["image_key"])
            for p in self.paragraphs
            for e in p
            if e.get("tag") == "img" and e.get("image_key")
        ]


@dataclass(frozen=True)
class ReceivedImage:
    """``image``: download with ``GET /open-apis/im/v1/messages/:message_id/resources/:image_key``."""

    image_key: str
    msg_type: str = field(default="image", init=False)


@dataclass(frozen=True)
class ReceivedFile:
    """``file``: ``file_key`` and ``file_name``."""

    file_key: str
    file_name: str | None = None
    msg_type: str = field(default="file", init=False)


@dataclass(frozen=True)
class ReceivedCard:
    """``interactive``: the card JSON as Feishu delivers it."""

    card: dict[str, Any]
    msg_type: str = field(default="interactive", init=False)


@dataclass(frozen=True)
class ReceivedOther:
    """Any other ``message_type``; ``data`` is the decoded content."""

    msg_type: str
    data: dict[str, Any]


ReceivedContent = ReceivedText | ReceivedPost | ReceivedImage | ReceivedFile | ReceivedCard | ReceivedOther


def _post_body(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Received posts are ``{"title", "content"}``; sent ones wrap that in a locale (``zh_cn``...)."""
    if "content" in data:
        return data
    for value in data.values():
        if isinstance(value, Mapping) and "content" in value:
            return value
    return {}


def parse_content(message_type: str | None, data: Mapping[str, Any]) -> ReceivedContent:
    """The typed content of a message of ``message_type`` whose decoded ``content`` is ``data``.

    Never raises: a content that does not have its type's fields becomes :class:`ReceivedOther`.
    """
    kind = message_type or ""
    if kind == "text" and isinstance(data.get("text"), str):
        return ReceivedText(data["text"])
    if kind == "post":
        body = _post_body(data)
        raw = body.get("content")
        paragraphs = [
            [dict(e) for e in line if isinstance(e, Mapping)]
            for line in (raw if isinstance(raw, list) else [])
            if isinstance(line, list)
        ]
        return ReceivedPost(str(body.get("title") or ""), paragraphs)
    if kind == "image" and _str(data.get("image_key")):
        return ReceivedImage(data["image_key"])
    if kind == "file" and _str(data.get("file_key")):
        return ReceivedFile(data["file_key"], _str(data.get("file_name")))
    if kind == "interactive":
        return ReceivedCard(dict(data))
    return ReceivedOther(kind, dict(data))
