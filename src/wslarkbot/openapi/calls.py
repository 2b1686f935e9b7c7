"""The requests behind the OpenAPI helpers (files, resources, messages, reactions, chats, users), no I/O.

Each function checks its arguments the way Feishu would (so a mistake fails here, with a clear message,
not as a Feishu error code later) and returns the :class:`~.core.HTTPRequest`; the clients
(:mod:`.base`) perform it. Paths, fields and limits: docs/openapi.md (with the Feishu pages they come from).
"""

from __future__ import annotations

import mimetypes
import os
import pathlib
from collections.abc import Iterable, Mapping
from typing import IO, Any, Union
from urllib.parse import quote

from ..exceptions import ConfigurationError
from .core import RECEIVE_ID_TYPES, FilePart, HTTPRequest

__all__ = [
    "FILE_TYPES",
    "IMAGE_TYPES",
    "MAX_FILE_BYTES",
    "MAX_IMAGE_BYTES",
    "URGENT_KINDS",
    "USER_ID_TYPES",
    "FileSource",
    "add_reaction",
    "chat_info",
    "chat_members",
    "download_resource",
    "file_part",
    "forward",
    "get_message",
    "list_reactions",
    "recall",
    "remove_reaction",
    "upload_file",
    "upload_image",
    "urgent",
    "user_info",
]

#: What can be uploaded: bytes, a path, or a binary file object.
FileSource = Union[bytes, str, "os.PathLike[str]", IO[bytes]]

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_FILE_BYTES = 30 * 1024 * 1024
IMAGE_TYPES = frozenset({"message", "avatar"})
FILE_TYPES = frozenset({"opus", "mp4", "pdf", "doc", "xls", "ppt", "stream"})
RESOURCE_TYPES = frozenset({"image", "file"})
USER_ID_TYPES = frozenset({"open_id", "user_id", "union_id"})
URGENT_KINDS = frozenset({"app", "sms", "phone"})

_MESSAGES = "/open-apis/im/v1/messages"


def _seg(value: str, what: str) -> str:
    """One path segment (an id), checked and escaped."""
    return quote(_required(value, what), safe="")


def _required(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a non-empty string")
    return value


def _one_of(value: str, allowed: frozenset[str], what: str) -> str:
    if value not in allowed:
        raise ConfigurationError(f"{what} must be one of {sorted(allowed)}, not {value!r}")
    return value


def file_part(
    source: FileSource, *, filename: str | None = None, content_type: str | None = None, limit: int
) -> FilePart:
    """Read ``source`` into a :class:`FilePart` (name and type guessed from a path).

    Raises:
        ConfigurationError: empty, larger than ``limit`` bytes, or not bytes / a path / a binary file.
    """
    if isinstance(source, (bytes, bytearray)):
        data, guessed = bytes(source), filename or "file"
    elif isinstance(source, (str, os.PathLike)):
        path = pathlib.Path(source)
        if path.stat().st_size > limit:
            raise ConfigurationError(f"{path} is larger than {limit} bytes (Feishu's limit)")
        data, guessed = path.read_bytes(), filename or path.name
    elif hasattr(source, "read"):
        data = source.read(limit + 1)
        if not isinstance(data, bytes):
            raise ConfigurationError("the file object must be opened in binary mode ('rb')")
        guessed = filename or pathlib.Path(str(getattr(source, "name", "file"))).name
    else:
        kind = type(source).__name__
        raise ConfigurationError(f"cannot upload a {kind}: pass bytes, a path or a binary file")
    if not data:
        raise ConfigurationError("Feishu does not accept empty files")
    if len(data) > limit:
        raise ConfigurationError(f"file is larger than {limit} bytes (Feishu's limit)")
    kind = content_type or mimetypes.guess_type(guessed)[0] or "application/octet-stream"
    return FilePart(guessed, data, kind)


#: leading bytes of the image formats Feishu takes, for bytes given without a name
_IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": ("image/png", "png"),
    b"\xff\xd8\xff": ("image/jpeg", "jpg"),
    b"GIF8": ("image/gif", "gif"),
    b"BM": ("image/bmp", "bmp"),
}


def _image_type(data: bytes) -> tuple[str, str] | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    return next((kind for magic, kind in _IMAGE_MAGIC.items() if data.startswith(magic)), None)


def upload_image(image: FileSource, image_type: str = "message") -> HTTPRequest:
    """``POST /open-apis/im/v1/images`` (multipart ``image_type``, ``image``; at most 10 MB)."""
    part = file_part(image, limit=MAX_IMAGE_BYTES)
    if not part.content_type.startswith("image/"):
        sniffed = _image_type(part.content)
        if sniffed is None:
            raise ConfigurationError("not an image Feishu takes (JPEG, PNG, WEBP, GIF, BMP...)")
        name = part.filename if "." in part.filename else f"image.{sniffed[1]}"
        part = FilePart(name, part.content, sniffed[0])
    return HTTPRequest(
        "POST",
        "/open-apis/im/v1/images",
        data={"image_type": _one_of(image_type, IMAGE_TYPES, "image_type")},
        files={"image": part},
    )


def upload_file(
    file: FileSource, file_type: str = "stream", file_name: str | None = None, duration: int | None = None
) -> HTTPRequest:
    """``POST /open-apis/im/v1/files`` (multipart ``file_type``, ``file_name``, ``duration``, ``file``).

    Args:
        file_type: ``opus`` (audio), ``mp4`` (video), ``pdf``, ``doc``, ``xls``, ``ppt``, or ``stream``
            (anything else).
        duration: milliseconds, for audio and video.
    """
    part = file_part(file, filename=file_name, limit=MAX_FILE_BYTES)
    data = {"file_type": _one_of(file_type, FILE_TYPES, "file_type"), "file_name": part.filename}
    if duration is not None:
        if duration < 0:
            raise ConfigurationError("duration is in milliseconds and must be >= 0")
        data["duration"] = str(int(duration))
    return HTTPRequest("POST", "/open-apis/im/v1/files", data=data, files={"file": part})


def download_resource(
    message_id: str, file_key: str, type: str = "image", path: str | os.PathLike[str] | None = None
) -> HTTPRequest:
    """``GET /open-apis/im/v1/messages/:message_id/resources/:file_key?type=image|file``: a file a user
    sent (its ``image_key`` or ``file_key``), as bytes or streamed to ``path``."""
    return HTTPRequest(
        "GET",
        f"{_MESSAGES}/{_seg(message_id, 'message_id')}/resources/{_seg(file_key, 'file_key')}",
        params={"type": _one_of(type, RESOURCE_TYPES, "type")},
        raw=True,
        save_to=os.fspath(path) if path is not None else None,
    )


def get_message(message_id: str) -> HTTPRequest:
    """``GET /open-apis/im/v1/messages/:message_id`` (``data.items``: the message, or a merged forward's)."""
    return HTTPRequest("GET", f"{_MESSAGES}/{_seg(message_id, 'message_id')}")


def recall(message_id: str) -> HTTPRequest:
    """``DELETE /open-apis/im/v1/messages/:message_id``: recall a message the app sent."""
    return HTTPRequest("DELETE", f"{_MESSAGES}/{_seg(message_id, 'message_id')}")


def forward(message_id: str, receive_id: str, receive_id_type: str = "open_id") -> HTTPRequest:
    """``POST /open-apis/im/v1/messages/:message_id/forward?receive_id_type=...``."""
    return HTTPRequest(
        "POST",
        f"{_MESSAGES}/{_seg(message_id, 'message_id')}/forward",
        {"receive_id": _required(receive_id, "receive_id")},
        {"receive_id_type": _one_of(receive_id_type, RECEIVE_ID_TYPES, "receive_id_type")},
    )


def add_reaction(message_id: str, emoji_type: str) -> HTTPRequest:
    """``POST /open-apis/im/v1/messages/:message_id/reactions`` with ``{"reaction_type": {"emoji_type"}}``
    (``SMILE``, ``THUMBSUP``, ``OK``... Feishu's emoji names)."""
    if not emoji_type or not isinstance(emoji_type, str):
        raise ConfigurationError("emoji_type must be a Feishu emoji name such as 'THUMBSUP'")
    return HTTPRequest(
        "POST",
        f"{_MESSAGES}/{_seg(message_id, 'message_id')}/reactions",
        {"reaction_type": {"emoji_type": emoji_type}},
    )


def remove_reaction(message_id: str, reaction_id: str) -> HTTPRequest:
    """``DELETE /open-apis/im/v1/messages/:message_id/reactions/:reaction_id`` (the app's own reaction)."""
    return HTTPRequest(
        "DELETE",
        f"{_MESSAGES}/{_seg(message_id, 'message_id')}/reactions/{_seg(reaction_id, 'reaction_id')}",
    )


def list_reactions(message_id: str, emoji_type: str | None = None) -> HTTPRequest:
    """``GET /open-apis/im/v1/messages/:message_id/reactions`` (paginated; ``reaction_type`` filters)."""
    params = {"reaction_type": emoji_type} if emoji_type else {}
    return HTTPRequest("GET", f"{_MESSAGES}/{_seg(message_id, 'message_id')}/reactions", params=params)


def chat_info(chat_id: str, user_id_type: str = "open_id") -> HTTPRequest:
    """``GET /open-apis/im/v1/chats/:chat_id``: name, description, owner, chat mode..."""
    return HTTPRequest(
        "GET",
        f"/open-apis/im/v1/chats/{_seg(chat_id, 'chat_id')}",
        params={"user_id_type": _one_of(user_id_type, USER_ID_TYPES, "user_id_type")},
    )


def chat_members(chat_id: str, member_id_type: str = "open_id") -> HTTPRequest:
    """``GET /open-apis/im/v1/chats/:chat_id/members`` (paginated: ``member_id``, ``name``...)."""
    return HTTPRequest(
        "GET",
        f"/open-apis/im/v1/chats/{_seg(chat_id, 'chat_id')}/members",
        params={"member_id_type": _one_of(member_id_type, USER_ID_TYPES, "member_id_type")},
    )


def user_info(user_id: str, user_id_type: str = "open_id") -> HTTPRequest:
    """``GET /open-apis/contact/v3/users/:user_id?user_id_type=...`` (``data.user``)."""
    return HTTPRequest(
        "GET",
        f"/open-apis/contact/v3/users/{_seg(user_id, 'user_id')}",
        params={"user_id_type": _one_of(user_id_type, USER_ID_TYPES, "user_id_type")},
    )


def urgent(
    message_id: str, user_ids: Iterable[str], kind: str = "app", user_id_type: str = "open_id"
) -> HTTPRequest:
    """``PATCH /open-apis/im/v1/messages/:message_id/urgent_app|urgent_sms|urgent_phone``: buzz the users
    (in-app, by SMS or by phone; ``data.invalid_user_id_list`` lists those that could not be reached)."""
    users = list(user_ids)
    if not users or not all(isinstance(u, str) and u for u in users):
        raise ConfigurationError("user_ids must list at least one user id")
    return HTTPRequest(
        "PATCH",
        f"{_MESSAGES}/{_seg(message_id, 'message_id')}/urgent_{_one_of(kind, URGENT_KINDS, 'kind')}",
        {"user_id_list": users},
        {"user_id_type": _one_of(user_id_type, USER_ID_TYPES, "user_id_type")},
    )


def page_params(params: Mapping[str, str] | None, page_token: str | None, page_size: int) -> dict[str, str]:
    """One page's query: the caller's ``params``, ``page_size`` and (after the first) ``page_token``."""
    if not 1 <= page_size <= 100:
        raise ConfigurationError("page_size must be 1..100")
    out = {**(params or {}), "page_size": str(page_size)}
    if page_token:
        out["page_token"] = page_token
    return out


def next_page(data: Mapping[str, Any], items_key: str) -> tuple[list[Any], str | None]:
    """A page's items and the token of the next page (None after the last: ``has_more`` false)."""
    items = data.get(items_key) or []
    token = data.get("page_token") if data.get("has_more") else None
    return list(items), str(token) if token else None
