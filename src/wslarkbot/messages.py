"""Contents of non-card messages: text, post (rich text), image, file, audio, media, sticker, share_*.

Each builder is a ``dict`` of the exact ``content`` JSON with a ``msg_type`` attribute and ``to_dict()``,
so ``api.send(receive_id, TextContent("hi " + mention("ou_x")))`` infers ``msg_type``. Invalid input raises
:class:`~wslarkbot.exceptions.CardValidationError` (the error for any malformed message body). Example::

    post = PostContent("Release", [PostText("v1.0 is out, "), PostLink("notes", "https://x.y")],
                       [PostCodeBlock("pip install wslarkbot", language="shell")])
    post.add_language("en_us", "Release", ["v1.0 is out"])
    api.send("oc_xxx", post, receive_id_type="chat_id")

The original project's names are kept as aliases (``FeishuTextMessage``, ``FeishuImageMessage``, ...).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from .exceptions import CardValidationError

__all__ = [
    "MAX_POST_BYTES",
    "MAX_TEXT_BYTES",
    "POST_STYLES",
    "AudioContent",
    "FeishuAudioMessage",
    "FeishuBaseMessage",
    "FeishuFileMessage",
    "FeishuImageMessage",
    "FeishuMediaMessage",
    "FeishuStickerMessage",
    "FeishuTextMessage",
    "FileContent",
    "ImageContent",
    "MediaContent",
    "MessageContent",
    "PostAt",
    "PostCodeBlock",
    "PostContent",
    "PostEmotion",
    "PostHr",
    "PostImage",
    "PostLink",
    "PostMarkdown",
    "PostMedia",
    "PostText",
    "ShareChatContent",
    "ShareUserContent",
    "StickerContent",
    "TextContent",
    "mention",
    "mention_all",
]

#: Size limits of the content string (protocol.md §8): text 150 KB, post 30 KB.
MAX_TEXT_BYTES = 150 * 1024
MAX_POST_BYTES = 30 * 1024
POST_STYLES = frozenset({"bold", "underline", "lineThrough", "italic"})
_LANG = re.compile(r"[a-z]{2}_[a-z]{2}")


def _fail(message: str) -> CardValidationError:
    return CardValidationError(message)


def _required(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(f"{name} must be a non-empty string")
    return value


def mention(user_id: str, name: str | None = None) -> str:
    """``<at user_id="ou_x">name</at>`` for a text message; ``user_id="all"`` mentions everyone."""
    _required("user_id", user_id)
    label = html.escape(name if name is not None else ("所有人" if user_id == "all" else ""), quote=False)
    return f'<at user_id="{html.escape(user_id)}">{label}</at>'


def mention_all() -> str:
    """``<at user_id="all">所有人</at>``: @everyone in a group text message."""
    return mention("all")


class MessageContent(dict[str, Any]):
    """Base of the content builders: the ``content`` dict plus its ``msg_type``."""

    msg_type: ClassVar[str] = "unknown"
    max_bytes: ClassVar[int | None] = None

    def to_dict(self) -> dict[str, Any]:
        """A plain deep copy; raises :class:`CardValidationError` above the size limit of the type."""
        data: dict[str, Any] = json.loads(json.dumps(self, ensure_ascii=False))
        if self.max_bytes is not None:
            size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
            if size > self.max_bytes:
                raise _fail(f"{self.msg_type} content is {size} bytes; the limit is {self.max_bytes}")
        return data


class TextContent(MessageContent):
    """``{"text": ...}``; use :func:`mention` for @, ``\\n`` for new lines."""

    msg_type = "text"
    max_bytes = MAX_TEXT_BYTES

    def __init__(self, text: str = "") -> None:
        if not isinstance(text, str):
            raise _fail("text must be a string")
        super().__init__(text=text)


class ImageContent(MessageContent):
    """``{"image_key": ...}`` (from the image upload API)."""

    msg_type = "image"

    def __init__(self, image_key: str = "") -> None:
        super().__init__(image_key=_required("image_key", image_key))


class FileContent(MessageContent):
    """``{"file_key": ...}`` (from the file upload API)."""

    msg_type = "file"

    def __init__(self, file_key: str = "") -> None:
        super().__init__(file_key=_required("file_key", file_key))


class AudioContent(FileContent):
    """``{"file_key": ...}`` of an opus audio file."""

    msg_type = "audio"


class StickerContent(FileContent):
    """``{"file_key": ...}`` of a sticker (only stickers received by the bot can be sent)."""

    msg_type = "sticker"


class MediaContent(MessageContent):
    """``{"file_key": ..., "image_key"?: cover}`` of a video."""

    msg_type = "media"

    def __init__(self, file_key: str = "", image_key: str | None = None) -> None:
        super().__init__(file_key=_required("file_key", file_key))
        if image_key:
            self["image_key"] = image_key


class ShareChatContent(MessageContent):
    """``{"chat_id": ...}``: a group card."""

    msg_type = "share_chat"

    def __init__(self, chat_id: str) -> None:
        super().__init__(chat_id=_required("chat_id", chat_id))


class ShareUserContent(MessageContent):
    """``{"user_id": ...}`` (an open_id): a user's profile card."""

    msg_type = "share_user"

    def __init__(self, user_id: str) -> None:
        super().__init__(user_id=_required("user_id", user_id))


# -- post (rich text) ------------------------------------------------------------------------------


def _styled(element: dict[str, Any], style: Iterable[str] | None) -> dict[str, Any]:
    if style is not None:
        styles = list(style)
        bad = [s for s in styles if s not in POST_STYLES]
        if bad:
            raise _fail(f"post style must be among {sorted(POST_STYLES)}, not {bad}")
        element["style"] = styles
    return element


class PostText(dict[str, Any]):
    """``{"tag": "text", "text", "un_escape"?, "style"?}``."""

    def __init__(self, text: str, un_escape: bool = False, style: Iterable[str] | None = None) -> None:
        if not isinstance(text, str):
            raise _fail("post text must be a string")
        super().__init__(_styled({"tag": "text", "text": text}, style))
        if un_escape:
            self["un_escape"] = True


class PostLink(dict[str, Any]):
    """``{"tag": "a", "text", "href", "style"?}``."""

    def __init__(self, text: str, href: str, style: Iterable[str] | None = None) -> None:
        super().__init__(
            _styled(
                {"tag": "a", "text": _required("link text", text), "href": _required("href", href)}, style
            )
        )


class PostAt(dict[str, Any]):
    """``{"tag": "at", "user_id", "style"?}``; ``user_id="all"`` mentions everyone."""

    def __init__(self, user_id: str, style: Iterable[str] | None = None) -> None:
        super().__init__(_styled({"tag": "at", "user_id": _required("user_id", user_id)}, style))


class PostImage(dict[str, Any]):
    """``{"tag": "img", "image_key"}``."""

    def __init__(self, image_key: str) -> None:
        super().__init__(tag="img", image_key=_required("image_key", image_key))


class PostMedia(dict[str, Any]):
    """``{"tag": "media", "file_key", "image_key"?}``."""

    def __init__(self, file_key: str, image_key: str | None = None) -> None:
        super().__init__(tag="media", file_key=_required("file_key", file_key))
        if image_key:
            self["image_key"] = image_key


class PostEmotion(dict[str, Any]):
    """``{"tag": "emotion", "emoji_type"}``, e.g. ``"SMILE"``."""

    def __init__(self, emoji_type: str) -> None:
        super().__init__(tag="emotion", emoji_type=_required("emoji_type", emoji_type))


class PostHr(dict[str, Any]):
    """``{"tag": "hr"}``: a divider paragraph."""

    def __init__(self) -> None:
        super().__init__(tag="hr")


class PostCodeBlock(dict[str, Any]):
    """``{"tag": "code_block", "language"?, "text"}``."""

    def __init__(self, text: str, language: str | None = None) -> None:
        if not isinstance(text, str):
            raise _fail("code_block text must be a string")
        super().__init__(tag="code_block")
        if language:
            self["language"] = language
        self["text"] = text


class PostMarkdown(dict[str, Any]):
    """``{"tag": "md", "text"}``: Markdown inside a post."""

    def __init__(self, text: str) -> None:
        super().__init__(tag="md", text=_required("md text", text))


_POST_TAGS = frozenset({"text", "a", "at", "img", "media", "emotion", "hr", "code_block", "md"})


def _paragraph(paragraph: Any) -> list[Any]:
    if isinstance(paragraph, (str, Mapping)):
        paragraph = [paragraph]
    items = [PostText(p) if isinstance(p, str) else p for p in paragraph]
    for item in items:
        if not isinstance(item, Mapping) or item.get("tag") not in _POST_TAGS:
            raise _fail(f"post elements are tags {sorted(_POST_TAGS)}, got {item!r}")
    return items


class PostContent(MessageContent):
    """Rich text ``{"zh_cn": {"title", "content": [[element, ...], ...]}, "en_us": {...}}``.

    Each positional paragraph is a list of Post* elements (a string becomes :class:`PostText`; a single
    element is a one-element paragraph). :meth:`add_language` adds another language.
    """

    msg_type = "post"
    max_bytes = MAX_POST_BYTES

    def __init__(self, title: str = "", *paragraphs: Any, lang: str = "zh_cn") -> None:
        super().__init__()
        self.add_language(lang, title, *paragraphs)

    def add_language(self, lang: str, title: str = "", *paragraphs: Any) -> PostContent:
        """Add (or replace) the body of ``lang`` (``zh_cn``, ``en_us``, ``ja_jp``...); returns self."""
        if not isinstance(lang, str) or not _LANG.fullmatch(lang):
            raise _fail(f"post language must look like 'zh_cn', not {lang!r}")
        if not isinstance(title, str):
            raise _fail("post title must be a string")
        body = [_paragraph(p) for p in paragraphs]
        if not title and not body:
            raise _fail("post needs a title or at least one paragraph")
        self[lang] = {"title": title, "content": body}
        return self


# The original project's names.
FeishuBaseMessage = MessageContent
FeishuTextMessage = TextContent
FeishuImageMessage = ImageContent
FeishuFileMessage = FileContent
FeishuAudioMessage = AudioContent
FeishuStickerMessage = StickerContent
FeishuMediaMessage = MediaContent
