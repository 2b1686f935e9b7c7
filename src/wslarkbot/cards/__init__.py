"""Message cards (JSON 1.0: ``config`` / ``header`` / ``elements``) and card-callback responses.

Everything is importable from ``wslarkbot.cards``; the parts live in :mod:`~wslarkbot.cards.base`
(:class:`CardElement`, limits, :func:`card_json`), :mod:`~wslarkbot.cards.elements` (display elements,
layout, the card), :mod:`~wslarkbot.cards.interactive` (buttons, selects, pickers) and
:mod:`~wslarkbot.cards.responses` (card-callback responses).

Every builder is a ``dict`` holding exactly Feishu's JSON, built and validated in the constructor, so
``json.dumps(card)`` works as with the original project; :meth:`CardElement.to_dict` returns a plain deep
copy and, for a whole card, also checks the 30 KB limit. Invalid input raises
:class:`~wslarkbot.exceptions.CardValidationError`. Constructors keep the original positional order
(``FeishuMessageOption(value, content)``, ``FeishuMessageButton(content, tag, value, type)``); newer
options are keywords. Example::

    card = FeishuMessageCard(
        FeishuMessageDiv("**bold**", tag="lark_md"),
        FeishuMessageAction(FeishuMessageButton("OK", value={"k": "v"}, type="primary")),
        header=FeishuMessageCardHeader("Title", template="green"),
    )
    api.send_card("ou_xxx", card)

Callback responses (protocol.md §6a): ``CardActionResponse(toast=Toast("done", "success"), card=card)``.
"""

from __future__ import annotations

from .base import (
    ACTION_LAYOUTS,
    BUTTON_TYPES,
    COLUMN_WEIGHT_MAX,
    COLUMN_WEIGHT_MIN,
    DATE_PICKER_TAGS,
    FLEX_MODES,
    HEADER_TEMPLATES,
    IMAGE_MODES,
    MAX_ACTIONS,
    MAX_CARD_BYTES,
    MAX_OPTIONS,
    TEXT_TAGS,
    TOAST_TYPES,
    VERTICAL_ALIGNS,
    CardElement,
    card_json,
)
from .elements import (
    FeishuMessageCard,
    FeishuMessageCardConfig,
    FeishuMessageCardHeader,
    FeishuMessageColumn,
    FeishuMessageColumnSet,
    FeishuMessageDiv,
    FeishuMessageHr,
    FeishuMessageImage,
    FeishuMessageLarkMD,
    FeishuMessageMarkdown,
    FeishuMessageMDText,
    FeishuMessageNote,
    FeishuMessagePlainText,
)
from .interactive import (
    FeishuMessageAction,
    FeishuMessageButton,
    FeishuMessageConfirm,
    FeishuMessageDatePicker,
    FeishuMessageOption,
    FeishuMessageOverflow,
    FeishuMessageSelect,
    FeishuMessageSelectPerson,
)
from .responses import CardActionResponse, TemplateCard, Toast

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
    "CardActionResponse",
    "CardElement",
    "FeishuMessageAction",
    "FeishuMessageButton",
    "FeishuMessageCard",
    "FeishuMessageCardConfig",
    "FeishuMessageCardHeader",
    "FeishuMessageColumn",
    "FeishuMessageColumnSet",
    "FeishuMessageConfirm",
    "FeishuMessageDatePicker",
    "FeishuMessageDiv",
    "FeishuMessageHr",
    "FeishuMessageImage",
    "FeishuMessageLarkMD",
    "FeishuMessageMDText",
    "FeishuMessageMarkdown",
    "FeishuMessageNote",
    "FeishuMessageOption",
    "FeishuMessageOverflow",
    "FeishuMessagePlainText",
    "FeishuMessageSelect",
    "FeishuMessageSelectPerson",
    "TemplateCard",
    "Toast",
    "card_json",
]
