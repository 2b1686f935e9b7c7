"""Interactive components: buttons, the action module, options, selects, overflow, date pickers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import (
    ACTION_LAYOUTS,
    BUTTON_TYPES,
    DATE_PICKER_TAGS,
    MAX_ACTIONS,
    MAX_OPTIONS,
    CardElement,
    _children,
    _choice,
    _fail,
    _text,
)

__all__ = [
    "FeishuMessageAction",
    "FeishuMessageButton",
    "FeishuMessageConfirm",
    "FeishuMessageDatePicker",
    "FeishuMessageOption",
    "FeishuMessageOverflow",
    "FeishuMessageSelect",
    "FeishuMessageSelectPerson",
]


class FeishuMessageConfirm(CardElement):
    """A confirmation dialog ``{"title": plain_text, "text": plain_text}`` for buttons and selects."""

    def __init__(self, title: str = "", text: str = "") -> None:
        if not title:
            raise _fail("confirm needs a title")
        super().__init__(title=_text(title, what="confirm title"), text=_text(text, what="confirm text"))


class FeishuMessageButton(CardElement):
    """``{"tag": "button", "text", "type", "value", "url"?, "confirm"?}``.

    Args:
        content: the label; ``tag`` its text tag (``plain_text`` or ``lark_md``).
        value: the dict sent back in the card callback's ``action.value``.
        type: ``default`` | ``primary`` | ``danger`` (and the 2.0 variants in :data:`BUTTON_TYPES`).
        url: open a link instead of (or besides) calling back; ``multi_url`` per platform.
    """

    def __init__(
        self,
        content: str = "",
        tag: str = "plain_text",
        value: Mapping[str, Any] | None = None,
        type: str = "default",
        *,
        url: str | None = None,
        multi_url: Mapping[str, str] | None = None,
        confirm: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not content:
            raise _fail("button needs a label")
        if value is not None and not isinstance(value, Mapping):
            raise _fail("button value must be a dict")
        super().__init__(
            tag="button",
            text=_text(content, tag, "button text"),
            type=_choice("button type", type, BUTTON_TYPES),
            value=dict(value or {}),
        )
        for key, item in (("url", url), ("multi_url", multi_url), ("confirm", confirm)):
            if item is not None:
                self[key] = item
        self.update(kwargs)


class FeishuMessageAction(CardElement):
    """The interaction module ``{"tag": "action", "layout", "actions": [...]}`` (buttons, selects...)."""

    def __init__(self, *actions: Any, layout: str | None = "flow") -> None:
        if not 1 <= len(actions) <= MAX_ACTIONS:
            raise _fail(f"action module needs 1..{MAX_ACTIONS} actions, got {len(actions)}")
        super().__init__(tag="action")
        if layout is not None:
            self["layout"] = _choice("action layout", layout, ACTION_LAYOUTS)
        self["actions"] = _children(actions, "actions")


class FeishuMessageOption(CardElement):
    """An option ``{"value", "text": {"tag": "plain_text", "content"}}``; the text defaults to the value."""

    def __init__(
        self, value: str = "", content: str = "", tag: str = "plain_text", *, url: str | None = None
    ) -> None:
        if not value:
            raise _fail("option needs a value")
        super().__init__(value=value, text=_text(content or value, tag, "option text"))
        if url is not None:
            self["url"] = url


def _options(options: tuple[Any, ...], what: str, required: bool = True) -> list[Any]:
    if required and not options:
        raise _fail(f"{what} needs at least one option")
    if len(options) > MAX_OPTIONS:
        raise _fail(f"{what} accepts at most {MAX_OPTIONS} options")
    return _children(options, f"{what} options")


def _interactive_extras(element: CardElement, kwargs: dict[str, Any], **known: Any) -> None:
    for key, item in known.items():
        if item is not None:
            element[key] = item
    element.update(kwargs)


class FeishuMessageSelect(CardElement):
    """``{"tag": "select_static", "placeholder", "options", "initial_option"?, "value"?}``.

    Both the original form ``FeishuMessageSelect(*options, placeholder="Pick")`` and
    ``FeishuMessageSelect("Pick", *options)`` work (a leading string is the placeholder).
    """

    def __init__(
        self,
        *options: Any,
        placeholder: str = "",
        tag: str = "select_static",
        initial_option: str | None = None,
        value: Mapping[str, Any] | None = None,
        confirm: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if options and isinstance(options[0], str):
            placeholder, options = options[0], options[1:]
        if tag == "plain_text":  # the original's ``tag`` named the placeholder's text tag
            tag = "select_static"
        items = _options(options, "select")
        values = [o.get("value") for o in items if isinstance(o, Mapping)]
        if initial_option is not None and initial_option not in values:
            raise _fail(f"initial_option {initial_option!r} is not one of the options")
        super().__init__(
            tag=_choice("select tag", tag, frozenset({"select_static"})),
            placeholder=_text(placeholder, what="placeholder"),
            options=items,
        )
        _interactive_extras(self, kwargs, initial_option=initial_option, value=value, confirm=confirm)


class FeishuMessageOverflow(CardElement):
    """The folded button group ``{"tag": "overflow", "options": [...]}``."""

    def __init__(
        self,
        *options: Any,
        value: Mapping[str, Any] | None = None,
        confirm: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(tag="overflow", options=_options(options, "overflow"))
        _interactive_extras(self, kwargs, value=value, confirm=confirm)


class FeishuMessageSelectPerson(CardElement):
    """``{"tag": "select_person", "placeholder", "options": [{"value": open_id}...]}``.

    Without persons Feishu offers every member of the chat.
    """

    def __init__(
        self,
        *persons: Any,
        placeholder: str = "",
        initial_option: str | None = None,
        value: Mapping[str, Any] | None = None,
        confirm: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        items = [{"value": p} if isinstance(p, str) else p for p in persons]
        super().__init__(tag="select_person", placeholder=_text(placeholder, what="placeholder"))
        if items:
            self["options"] = _options(tuple(items), "select_person")
        _interactive_extras(self, kwargs, initial_option=initial_option, value=value, confirm=confirm)


class FeishuMessageDatePicker(CardElement):
    """``{"tag": "date_picker" | "picker_time" | "picker_datetime", "placeholder", ...}``."""

    def __init__(
        self,
        content: str = "Please select date",
        tag: str = "date_picker",
        *,
        initial_date: str | None = None,
        initial_time: str | None = None,
        initial_datetime: str | None = None,
        value: Mapping[str, Any] | None = None,
        confirm: Mapping[str, Any] | None = None,
    ) -> None:
        if tag == "plain_text":  # the original's ``tag`` named the placeholder's text tag
            tag = "date_picker"
        super().__init__(
            tag=_choice("date picker tag", tag, DATE_PICKER_TAGS),
            placeholder=_text(content, what="placeholder"),
        )
        _interactive_extras(
            self,
            {},
            initial_date=initial_date,
            initial_time=initial_time,
            initial_datetime=initial_datetime,
            value=value,
            confirm=confirm,
        )
