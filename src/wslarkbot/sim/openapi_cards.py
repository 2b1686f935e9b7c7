"""The fake OpenAPI's cards: which ``interactive`` contents Feishu accepts, and CardKit card entities with
their sequence, streaming and rate rules; no I/O (docs/openapi.md "Cards", "CardKit").

:class:`CardKitStore` is a part of :class:`~wslarkbot.sim.openapi_state.OpenAPIState`, called with its
lock held after the request was authorised; :func:`check_card` is what the message store asks of every
card it is sent.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .openapi_messages import CODE_VALIDATION, OpenAPIFailure

__all__ = ["CardEntity", "CardKitStore", "check_card"]

#: "card build failed" (protocol.md §8)
CODE_CARD_BUILD = 230099
# Chosen by the fake (docs/openapi.md): a sequence not above the card's last one; an element that is not
# there or cannot stream; streaming text while streaming mode is off; updates over the rate limit.
CODE_SEQUENCE = 300317
CODE_ELEMENT = 300302
CODE_NOT_STREAMING = 300309
CODE_CARD_RATE = 300311
CODE_CARD_UNKNOWN = 300301
#: CardKit updates per second per card entity the fake allows (as far as we know: 10)
CARD_UPDATES_PER_SECOND = 10
STREAMABLE_TAGS = frozenset({"markdown", "plain_text"})


def _elements(elements: Any) -> Iterator[dict[str, Any]]:
    for element in elements if isinstance(elements, list) else []:
        if isinstance(element, dict):
            yield element
            for key in ("elements", "columns"):
                yield from _elements(element.get(key))


def _check_v2(card: Mapping[str, Any]) -> None:
    body = card.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("elements"), list):
        raise OpenAPIFailure(CODE_CARD_BUILD, "card build failed: a 2.0 card needs body.elements")
    ids = [e["element_id"] for e in _elements(body["elements"]) if "element_id" in e]
    if len(ids) != len(set(ids)):
        raise OpenAPIFailure(CODE_CARD_BUILD, "card build failed: duplicate element_id")
    if any(e.get("tag") in ("action", "note") for e in _elements(body["elements"])):
        raise OpenAPIFailure(CODE_CARD_BUILD, "card build failed: action/note are not 2.0 elements")


def check_card(card: Any, entity: Callable[[str], CardEntity | None]) -> None:
    """Refuse (230099) a card content Feishu cannot build: a JSON 1.0 card (``elements``/``header``/
    ``i18n_elements``), a 2.0 card (``schema``, ``body.elements``), a template
    (``{"type": "template", "data": {"template_id"}}``) or a card entity (``{"type": "card", "data":
    {"card_id"}}``, which ``entity`` must know)."""
    if not isinstance(card, dict):
        raise OpenAPIFailure(CODE_CARD_BUILD, "card build failed: not an object")
    kind, data = card.get("type"), card.get("data")
    if kind == "template":
        if not isinstance(data, dict) or not isinstance(data.get("template_id"), str):
            raise OpenAPIFailure(CODE_CARD_BUILD, "card build failed: template needs data.template_id")
        if "template_variable" in data and not isinstance(data["template_variable"], dict):
            raise OpenAPIFailure(CODE_CARD_BUILD, "card build failed: template_variable must be an object")
        return
    if kind == "card":
        if not isinstance(data, dict) or entity(str(data.get("card_id"))) is None:
            raise OpenAPIFailure(CODE_CARD_BUILD, "card build failed: unknown card_id")
        return
    if "template_id" in card:
        raise OpenAPIFailure(
            CODE_CARD_BUILD, 'card build failed: a template is {"type": "template", "data": {...}}'
        )
    if card.get("schema") == "2.0":
        _check_v2(card)
        return
    if any(key in card for key in ("elements", "header", "i18n_elements")):
        return
    raise OpenAPIFailure(CODE_CARD_BUILD, "card build failed: no elements")


@dataclass
class CardEntity:
    """A card entity: its current card, its last sequence, and every update in order."""

    card_id: str
    app_id: str
    card: dict[str, Any]
    sequence: int = 0
    #: ``(what, sequence)``: ``"text:<element_id>"``, ``"card"`` or ``"settings"``
    history: list[tuple[str, int]] = field(default_factory=list)
    updates: deque[float] = field(default_factory=deque)

    @property
    def streaming(self) -> bool:
        return bool(self.card.get("config", {}).get("streaming_mode"))

    def element(self, element_id: str) -> dict[str, Any] | None:
        body = self.card.get("body", {})
        return next((e for e in _elements(body.get("elements")) if e.get("element_id") == element_id), None)


def _card_json(raw: Any, what: str) -> dict[str, Any]:
    if not isinstance(raw, str):
        raise OpenAPIFailure(CODE_VALIDATION, f"field validation failed: {what} must be a JSON string")
    try:
        card = json.loads(raw)
    except ValueError:
        raise OpenAPIFailure(CODE_VALIDATION, f"field validation failed: {what} is not JSON") from None
    if not isinstance(card, dict) or card.get("schema") != "2.0":
        raise OpenAPIFailure(CODE_CARD_BUILD, "card entities take JSON 2.0 cards only")
    _check_v2(card)
    return card


class CardKitStore:
    """Card entities of every app. Not thread-safe by itself: the owner holds a lock.

    Args:
        monotonic: the clock of the per-card rate limit.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.cards: dict[str, CardEntity] = {}

    def get(self, card_id: str) -> CardEntity | None:
        return self.cards.get(card_id)

    def create(self, app_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("type") != "card_json":
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: type must be card_json")
        card = _card_json(body.get("data"), "data")
        card_id = "7" + "".join(secrets.choice("0123456789") for _ in range(18))
        self.cards[card_id] = CardEntity(card_id, app_id, card)
        return {"code": 0, "msg": "success", "data": {"card_id": card_id}}

    def _entity(self, app_id: str, card_id: str, body: Any) -> tuple[CardEntity, int]:
        entity = self.cards.get(card_id)
        if entity is None or entity.app_id != app_id:
            raise OpenAPIFailure(CODE_CARD_UNKNOWN, "card entity not found")
        sequence = body.get("sequence") if isinstance(body, dict) else None
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: sequence")
        if sequence <= entity.sequence:
            raise OpenAPIFailure(CODE_SEQUENCE, f"sequence {sequence} is not above {entity.sequence}")
        now = self._monotonic()
        while entity.updates and now - entity.updates[0] >= 1.0:
            entity.updates.popleft()
        if len(entity.updates) >= CARD_UPDATES_PER_SECOND:
            raise OpenAPIFailure(CODE_CARD_RATE, "card entity update frequency limit")
        return entity, sequence

    def _done(self, entity: CardEntity, what: str, sequence: int) -> dict[str, Any]:
        entity.sequence = sequence
        entity.history.append((what, sequence))
        entity.updates.append(self._monotonic())
        return {"code": 0, "msg": "success", "data": {}}

    def stream_text(self, app_id: str, card_id: str, element_id: str, body: Any) -> dict[str, Any]:
        entity, sequence = self._entity(app_id, card_id, body)
        if not entity.streaming:
            raise OpenAPIFailure(CODE_NOT_STREAMING, "the card is not in streaming mode")
        element = entity.element(element_id)
        if element is None or element.get("tag") not in STREAMABLE_TAGS:
            raise OpenAPIFailure(CODE_ELEMENT, f"no markdown or plain_text element {element_id!r}")
        content = body.get("content")
        if not isinstance(content, str):
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: content")
        element["content"] = content
        return self._done(entity, f"text:{element_id}", sequence)

    def update(self, app_id: str, card_id: str, body: Any) -> dict[str, Any]:
        entity, sequence = self._entity(app_id, card_id, body)
        card = body.get("card")
        if not isinstance(card, dict) or card.get("type") != "card_json":
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: card.type must be card_json")
        entity.card = _card_json(card.get("data"), "card.data")
        return self._done(entity, "card", sequence)

    def settings(self, app_id: str, card_id: str, body: Any) -> dict[str, Any]:
        entity, sequence = self._entity(app_id, card_id, body)
        try:
            settings = json.loads(body.get("settings"))
        except (TypeError, ValueError):
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: settings must be JSON") from None
        if not isinstance(settings, dict) or not isinstance(settings.get("config", {}), dict):
            raise OpenAPIFailure(CODE_VALIDATION, "field validation failed: settings.config")
        entity.card.setdefault("config", {}).update(settings.get("config", {}))
        return self._done(entity, "settings", sequence)
