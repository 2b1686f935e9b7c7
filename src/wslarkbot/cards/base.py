"""The base of every card builder: :class:`CardElement`, the shared checks, the limits, :func:`card_json`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..exceptions import CardValidationError

__all__ = [
    "ACTION_LAYOUTS",
    "BUTTON_TYPES",
    "COLUMN_WEIGHT_MAX",
    "COLUMN_WEIGHT_MIN",
    "DATE_PICKER_TAGS",
    "FLEX_MODES",
    "HEADER_TEMPLATES",
    "IMAGE_MODES",
    "MAX_ACTIONS",
    "MAX_CARD_BYTES",
    "MAX_OPTIONS",
    "TEXT_TAGS",
    "TOAST_TYPES",
    "VERTICAL_ALIGNS",
    "CardElement",
    "card_json",
]

#: A card's ``content`` is at most 30 KB (protocol.md §8, "Size limits").
MAX_CARD_BYTES = 30 * 1024
HEADER_TEMPLATES = frozenset(
    {
        "blue",
        "wathet",
        "turquoise",
        "green",
        "yellow",
        "orange",
        "red",
        "carmine",
        "violet",
        "purple",
        "indigo",
        "grey",
        "default",
    }
)
TEXT_TAGS = frozenset({"plain_text", "lark_md"})
BUTTON_TYPES = frozenset(
    {
        "default",
        "primary",
        "danger",
        "text",
        "laser",
        "primary_filled",
        "danger_filled",
        "primary_text",
        "danger_text",
    }
)
ACTION_LAYOUTS = frozenset({"bisected", "trisected", "flow"})
FLEX_MODES = frozenset({"none", "stretch", "flow", "bisect", "trisect"})
VERTICAL_ALIGNS = frozenset({"top", "center", "bottom"})
IMAGE_MODES = frozenset({"crop_center", "fit_horizontal", "stretch", "large", "medium", "small", "tiny"})
DATE_PICKER_TAGS = frozenset({"date_picker", "picker_time", "picker_datetime"})
TOAST_TYPES = frozenset({"info", "success", "error", "warning"})
#: Column weights are 1..5 (``width="weighted"``).
COLUMN_WEIGHT_MIN, COLUMN_WEIGHT_MAX = 1, 5
#: Conservative bounds of our own: the 1.0 docs state none, and Feishu answers 230099 for cards it
#: cannot build; failing here gives a clearer message.
MAX_ACTIONS = 20
MAX_OPTIONS = 100


def _fail(message: str) -> CardValidationError:
    return CardValidationError(message)


def _plain(value: Any) -> Any:
    """A deep copy made of plain dicts and lists (tuples and builder objects converted)."""
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, CardElement):
        value = to_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def card_json(card: Any) -> str:
    """Compact JSON of a card (builder or dict), as sent in ``content``; raises if over 30 KB."""
    text = json.dumps(_plain(card), ensure_ascii=False, separators=(",", ":"))
    size = len(text.encode("utf-8"))
    if size > MAX_CARD_BYTES:
        raise _fail(f"card JSON is {size} bytes; Feishu accepts at most {MAX_CARD_BYTES}")
    return text


def _choice(name: str, value: Any, allowed: frozenset[str]) -> str:
    if value not in allowed:
        raise _fail(f"{name} must be one of {sorted(allowed)}, not {value!r}")
    return str(value)


def _text(content: Any, tag: str = "plain_text", what: str = "text") -> dict[str, Any]:
    """A text object ``{"tag", "content"}``; an existing text object (dict with ``tag``) is kept."""
    if isinstance(content, Mapping) and "tag" in content:
        _choice(f"{what} tag", content["tag"], TEXT_TAGS)
        return dict(content)
    if not isinstance(content, str):
        raise _fail(f"{what} must be a string or a text object, not {type(content).__name__}")
    return {"tag": _choice(f"{what} tag", tag, TEXT_TAGS), "content": content}


def _children(items: tuple[Any, ...] | list[Any], what: str) -> list[Any]:
    out = []
    for item in items:
        if not isinstance(item, Mapping) and not callable(getattr(item, "to_dict", None)):
            raise _fail(f"{what} must be card elements (dicts), not {type(item).__name__}")
        out.append(item)
    return out


class CardElement(dict[str, Any]):
    """Base of every card builder: a ``dict`` of Feishu's JSON with a :meth:`to_dict`."""

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready deep copy."""
        result: dict[str, Any] = _plain(self)
        return result
