"""The requests of CardKit, Feishu's card entities (docs/openapi.md "CardKit"), no I/O.

A card entity is a JSON 2.0 card stored by Feishu under a ``card_id``; a message shows it
(``{"type": "card", "data": {"card_id"}}``) and follows its updates. Its elements are updated by
``element_id``, text in *streaming mode* (``config.streaming_mode``) with a typing effect. Every update
carries a ``sequence`` that must grow with each update of the card. Paths and fields are those of the
official SDK (``lark_oapi.api.cardkit.v1``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ..cards.base import card_json
from ..exceptions import ConfigurationError
from .core import HTTPRequest

__all__ = ["card_content", "create_card", "stream_text", "update_card", "update_settings"]

_CARDS = "/open-apis/cardkit/v1/cards"


def _id(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a non-empty string")
    return quote(value, safe="")


def _sequence(sequence: int) -> int:
    if not isinstance(sequence, int) or sequence < 1:
        raise ConfigurationError("sequence must be an integer >= 1, growing with each update of the card")
    return sequence


def _card_2(card: Any) -> str:
    """The card as a JSON string, which must be a JSON 2.0 card (card entities take no other)."""
    text = card_json(card)
    if json.loads(text).get("schema") != "2.0":
        raise ConfigurationError("card entities take JSON 2.0 cards (wslarkbot.cards.v2.Card)")
    return text


def card_content(card_id: str) -> dict[str, Any]:
    """The ``interactive`` message content that shows card entity ``card_id``."""
    _id(card_id, "card_id")
    return {"type": "card", "data": {"card_id": card_id}}


def create_card(card: Any) -> HTTPRequest:
    """``POST /open-apis/cardkit/v1/cards`` ``{"type": "card_json", "data"}``: ``data.card_id``."""
    return HTTPRequest("POST", _CARDS, {"type": "card_json", "data": _card_2(card)})


def update_card(card_id: str, card: Any, sequence: int) -> HTTPRequest:
    """``PUT /open-apis/cardkit/v1/cards/:card_id``: replace the whole card (e.g. the final one, with
    ``streaming_mode`` off)."""
    body = {"card": {"type": "card_json", "data": _card_2(card)}, "sequence": _sequence(sequence)}
    return HTTPRequest("PUT", f"{_CARDS}/{_id(card_id, 'card_id')}", body)


def stream_text(card_id: str, element_id: str, content: str, sequence: int) -> HTTPRequest:
    """``PUT /open-apis/cardkit/v1/cards/:card_id/elements/:element_id/content``: the element's whole text
    so far (Feishu types out what is new when the card is in streaming mode)."""
    if not isinstance(content, str):
        raise ConfigurationError("content must be a string")
    return HTTPRequest(
        "PUT",
        f"{_CARDS}/{_id(card_id, 'card_id')}/elements/{_id(element_id, 'element_id')}/content",
        {"content": content, "sequence": _sequence(sequence)},
    )


def update_settings(card_id: str, settings: Mapping[str, Any], sequence: int) -> HTTPRequest:
    """``PATCH /open-apis/cardkit/v1/cards/:card_id/settings`` ``{"settings": "<JSON>", "sequence"}``,
    e.g. ``{"config": {"streaming_mode": False}}`` to end streaming."""
    if not isinstance(settings, Mapping):
        raise ConfigurationError("settings must be a dict such as {'config': {'streaming_mode': False}}")
    text = json.dumps(dict(settings), ensure_ascii=False, separators=(",", ":"))
    body = {"settings": text, "sequence": _sequence(sequence)}
    return HTTPRequest("PATCH", f"{_CARDS}/{_id(card_id, 'card_id')}/settings", body)
