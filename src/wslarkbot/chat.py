"""Chat-bot policies of :class:`~wslarkbot.bot.Bot`, without I/O: per-chat ordering keys and stale-message
detection (deduplication is :mod:`wslarkbot.dedup`).

* **Ordering** (``Bot(ordering=...)``): events with the same key are handled one at a time, in arrival
  order; events with different keys (and events whose key is None) run in parallel. ``"chat"`` (the
  default) keys received messages by ``chat_id`` -- a p2p chat is one user with the bot, so that is per
  user there -- and leaves every other event, and every callback, unordered (a card click must be answered
  within 3 s and should not wait behind a slow answer). ``None`` turns ordering off; a callable
  ``key_fn(event) -> Hashable | None`` chooses its own keys.
* **Stale messages** (``Bot(drop_older_than=...)``): :func:`message_age` from ``event.message.create_time``
  (milliseconds); a bot that was offline for an hour can choose not to answer hour-old questions.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import timedelta
from typing import Literal

from .events import FeishuEvent, MessageEvent
from .exceptions import ConfigurationError

__all__ = [
    "KeyFunction",
    "Ordering",
    "chat_key",
    "message_age",
    "resolve_ordering",
    "seconds",
]

#: ``key_fn(event)``: the ordering key of an event, or None to leave it unordered.
KeyFunction = Callable[[FeishuEvent], Hashable | None]
#: What ``Bot(ordering=...)`` accepts.
Ordering = Literal["chat"] | KeyFunction | None


def chat_key(event: FeishuEvent) -> Hashable | None:
    """The ``"chat"`` ordering: ``("chat", chat_id)`` for received messages (the sender's open_id when a
    message has no chat_id), None for everything else."""
    if not isinstance(event, MessageEvent):
        return None
    if event.chat_id:
        return ("chat", event.chat_id)
    sender = event.sender_open_id
    return ("user", sender) if sender else None


def resolve_ordering(ordering: Ordering) -> KeyFunction | None:
    """The key function for ``Bot(ordering=...)``.

    Raises:
        ConfigurationError: neither ``"chat"``, None nor a callable.
    """
    if ordering is None:
        return None
    if ordering == "chat":
        return chat_key
    if callable(ordering):
        return ordering
    raise ConfigurationError(f"ordering must be 'chat', None or a key function, not {ordering!r}")


def seconds(value: float | timedelta | None, name: str) -> float | None:
    """``value`` in seconds (a number or a ``timedelta``); None stays None.

    Raises:
        ConfigurationError: not a positive duration.
    """
    if value is None:
        return None
    result = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(result, bool) or not isinstance(result, (int, float)) or result <= 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds or a timedelta")
    return float(result)


def message_age(event: FeishuEvent, now: float) -> float | None:
    """Seconds between a received message's ``create_time`` (ms) and ``now`` (epoch seconds).

    None for other events, or when the message carries no usable create_time.
    """
    if not isinstance(event, MessageEvent):
        return None
    raw = event.message_create_time
    try:
        created_ms = int(raw) if raw is not None else None
    except ValueError:
        return None
    return None if created_ms is None else now - created_ms / 1000.0
