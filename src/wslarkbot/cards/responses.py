"""Card-callback responses (protocol.md §6a): a toast, a new card (raw or from a template), or both."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import TOAST_TYPES, CardElement, _choice, _fail, _plain, card_json

__all__ = [
    "CardActionResponse",
    "TemplateCard",
    "Toast",
]


class Toast(CardElement):
    """``{"type": "info"|"success"|"error"|"warning", "content", "i18n"?: {"zh_cn", "en_us", ...}}``."""

    def __init__(self, content: str, type: str = "info", i18n: Mapping[str, str] | None = None) -> None:
        if not content and not i18n:
            raise _fail("toast needs content")
        super().__init__(type=_choice("toast type", type, TOAST_TYPES), content=content)
        if i18n is not None:
            self["i18n"] = dict(i18n)


class TemplateCard(CardElement):
    """A card built from a template made in Feishu's card builder:
    ``{"type": "template", "data": {"template_id", "template_version_name"?, "template_variable"?}}``.

    The same shape is a message's ``content`` (``api.send_card(open_id, TemplateCard(...))``), a
    callback response's ``card`` and a delayed update's ``card`` (docs/openapi.md "Cards").
    """

    msg_type = "interactive"

    def __init__(
        self,
        template_id: str,
        template_variable: Mapping[str, Any] | None = None,
        template_version_name: str | None = None,
    ) -> None:
        if not isinstance(template_id, str) or not template_id:
            raise _fail("template card needs a template_id")
        data: dict[str, Any] = {"template_id": template_id}
        if template_version_name is not None:
            data["template_version_name"] = template_version_name
        if template_variable is not None:
            if not isinstance(template_variable, Mapping):
                raise _fail("template_variable must be a dict")
            data["template_variable"] = dict(template_variable)
        super().__init__(type="template", data=data)


class CardActionResponse(CardElement):
    """The answer to ``card.action.trigger``: ``{"toast": {...}, "card": {"type", "data"}}``.

    ``toast`` is a :class:`Toast` or a string (an ``info`` toast). ``card`` is a card (builder or dict,
    sent as ``raw``) or a :class:`TemplateCard` (sent as ``template``). Both optional: ``{}`` keeps the card.
    """

    def __init__(self, toast: Toast | str | None = None, card: Any = None) -> None:
        super().__init__()
        if toast is not None:
            self["toast"] = Toast(toast) if isinstance(toast, str) else Toast(**_toast_args(toast))
        if card is not None:
            if isinstance(card, TemplateCard):
                self["card"] = card.to_dict()
            elif isinstance(card, Mapping) or callable(getattr(card, "to_dict", None)):
                data = _plain(card)
                card_json(data)
                self["card"] = {"type": "raw", "data": data}
            else:
                raise _fail("card must be a card (dict or builder) or a TemplateCard")


def _toast_args(toast: Any) -> dict[str, Any]:
    if not isinstance(toast, Mapping):
        raise _fail("toast must be a Toast, a dict or a string")
    return {"content": toast.get("content", ""), "type": toast.get("type", "info"), "i18n": toast.get("i18n")}
