"""``im.message.receive_v1`` as :class:`MessageEvent`: accessors for the message, its sender, its mentions
and its typed content (re-exported by :mod:`wslarkbot.events`). No I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .. import content as _content
from .base import EventV2, _dict, _str_or_none

__all__ = ["MessageEvent"]


def _parse_content(content: Any) -> dict[str, Any]:
    """``event.message.content`` (a JSON string) parsed; ``{}`` when it is not a JSON object."""
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
