"""Message cards (JSON 1.0: ``config`` / ``header`` / ``elements``) and card-callback responses.

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

import json
import re
from collections.abc import Mapping
from typing import Any

from .exceptions import CardValidationError

__all__ = [
    "ACTION_LAYOUTS",
    "BUTTON_TYPES",
    "COLUMN_WEIGHT_MAX",
    "COLUMN_WEIGHT_MIN",
    "FLEX_MODES",
    "HEADER_TEMPLATES",
    "MAX_ACTIONS",
    "MAX_CARD_BYTES",
    "MAX_OPTIONS",
    "TEXT_TAGS",
    "TOAST_TYPES",
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

#: A card's ``content`` is at most 30 KB (protocol.md §8, "Size limits").
MAX_CARD_BYTES = 30 * 1024
HEADER_TEMPLATES = frozenset({"blue", "wathet", "turquoise", "green", "yellow", "orange", "red", "carmine",
                              "violet", "purple", "indigo", "grey", "default"})
TEXT_TAGS = frozenset({"plain_text", "lark_md"})
BUTTON_TYPES = frozenset({"default", "primary", "danger", "text", "laser", "primary_filled", "danger_filled",
                          "primary_text", "danger_text"})
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


class FeishuMessagePlainText(CardElement):
    """``{"tag": "plain_text", "content": ...}`` (``lines`` limits the displayed lines)."""

    def __init__(self, content: str = "", *, lines: int | None = None) -> None:
        super().__init__(_text(content))
        if lines is not None:
            self["lines"] = lines


class FeishuMessageMDText(CardElement):
    """``{"tag": "lark_md", "content": ...}``: Feishu's Markdown subset inside a text object."""

    def __init__(self, content: str = "") -> None:
        super().__init__(_text(content, "lark_md"))


class FeishuMessageLarkMD(CardElement):
    """A div *field* (as in the original project): ``{"is_short", "text": {"tag": "lark_md", ...}}``.

    Use it in ``FeishuMessageDiv(fields=[...])``; for a lark_md text object use :class:`FeishuMessageMDText`.
    """

    def __init__(self, content: str = "", is_short: bool = False) -> None:
        super().__init__(is_short=bool(is_short), text=_text(content, "lark_md"))


class FeishuMessageDiv(CardElement):
    """The content module ``{"tag": "div", "text": {...}, "fields": [...], "extra": {...}}``.

    A plain string ``content`` becomes ``plain_text`` (``tag="lark_md"`` for Markdown); a text object
    is used as is. ``fields`` are :class:`FeishuMessageLarkMD` (or ``{"is_short", "text"}`` dicts);
    ``extra`` is one element shown on the right (an image, a button, an overflow...).
    """

    def __init__(self, content: Any = "", tag: str = "plain_text", *, fields: list[Any] | None = None,
                 extra: Any = None, **kwargs: Any) -> None:
        super().__init__(tag="div")
        if content != "" or not fields:
            self["text"] = _text(content, tag)
        if fields:
            for f in fields:
                if not isinstance(f, Mapping) or "text" not in f:
                    raise _fail("div fields must be {'is_short': bool, 'text': {...}} (FeishuMessageLarkMD)")
                _text(f["text"], what="field text")
            self["fields"] = list(fields)
        if extra is not None:
            self["extra"] = _children([extra], "div extra")[0]
        self.update(kwargs)


class FeishuMessageHr(CardElement):
    """The divider ``{"tag": "hr"}``."""

    def __init__(self) -> None:
        super().__init__(tag="hr")


class FeishuMessageMarkdown(CardElement):
    """``{"tag": "markdown", "content": ...}`` (extra keys such as ``text_align`` are passed through)."""

    def __init__(self, content: str = "", **kwargs: Any) -> None:
        if not isinstance(content, str):
            raise _fail("markdown content must be a string")
        super().__init__(tag="markdown", content=content, **kwargs)


class FeishuMessageImage(CardElement):
    """``{"tag": "img", "img_key", "alt": {"tag": "plain_text", ...}, "mode", "preview"}``."""

    def __init__(self, img_key: str = "", alt: str = "", tag: str = "plain_text",
                 mode: str = "fit_horizontal", preview: bool = True, *, title: Any = None) -> None:
        if not img_key:
            raise _fail("image needs an img_key (upload the image first)")
        super().__init__(tag="img", img_key=img_key, alt=_text(alt, tag or "plain_text", "image alt"),
                         mode=_choice("image mode", mode, IMAGE_MODES), preview=bool(preview))
        if title is not None:
            self["title"] = _text(title)


class FeishuMessageNote(CardElement):
    """The note module ``{"tag": "note", "elements": [...]}``: text objects and images; strings are plain."""

    def __init__(self, *elements: Any) -> None:
        if not elements:
            raise _fail("note needs at least one element")
        items = [FeishuMessagePlainText(e) if isinstance(e, str) else e for e in elements]
        for item in items:
            tag = item.get("tag") if isinstance(item, Mapping) else None
            if tag not in ("plain_text", "lark_md", "img"):
                raise _fail(f"note elements are plain_text, lark_md or img, not {tag!r}")
        super().__init__(tag="note", elements=items)


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

    def __init__(self, content: str = "", tag: str = "plain_text", value: Mapping[str, Any] | None = None,
                 type: str = "default", *, url: str | None = None, multi_url: Mapping[str, str] | None = None,
                 confirm: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if not content:
            raise _fail("button needs a label")
        if value is not None and not isinstance(value, Mapping):
            raise _fail("button value must be a dict")
        super().__init__(tag="button", text=_text(content, tag, "button text"),
                         type=_choice("button type", type, BUTTON_TYPES), value=dict(value or {}))
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

    def __init__(self, value: str = "", content: str = "", tag: str = "plain_text", *,
                 url: str | None = None) -> None:
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

    def __init__(self, *options: Any, placeholder: str = "", tag: str = "select_static",
                 initial_option: str | None = None, value: Mapping[str, Any] | None = None,
                 confirm: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if options and isinstance(options[0], str):
            placeholder, options = options[0], options[1:]
        if tag == "plain_text":  # the original's ``tag`` named the placeholder's text tag
            tag = "select_static"
        items = _options(options, "select")
        values = [o.get("value") for o in items if isinstance(o, Mapping)]
        if initial_option is not None and initial_option not in values:
            raise _fail(f"initial_option {initial_option!r} is not one of the options")
        super().__init__(tag=_choice("select tag", tag, frozenset({"select_static"})),
                         placeholder=_text(placeholder, what="placeholder"), options=items)
        _interactive_extras(self, kwargs, initial_option=initial_option, value=value, confirm=confirm)


class FeishuMessageOverflow(CardElement):
    """The folded button group ``{"tag": "overflow", "options": [...]}``."""

    def __init__(self, *options: Any, value: Mapping[str, Any] | None = None,
                 confirm: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(tag="overflow", options=_options(options, "overflow"))
        _interactive_extras(self, kwargs, value=value, confirm=confirm)


class FeishuMessageSelectPerson(CardElement):
    """``{"tag": "select_person", "placeholder", "options": [{"value": open_id}...]}``.

    Without persons Feishu offers every member of the chat.
    """

    def __init__(self, *persons: Any, placeholder: str = "", initial_option: str | None = None,
                 value: Mapping[str, Any] | None = None, confirm: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        items = [{"value": p} if isinstance(p, str) else p for p in persons]
        super().__init__(tag="select_person", placeholder=_text(placeholder, what="placeholder"))
        if items:
            self["options"] = _options(tuple(items), "select_person")
        _interactive_extras(self, kwargs, initial_option=initial_option, value=value, confirm=confirm)


class FeishuMessageDatePicker(CardElement):
    """``{"tag": "date_picker" | "picker_time" | "picker_datetime", "placeholder", ...}``."""

    def __init__(self, content: str = "Please select date", tag: str = "date_picker", *,
                 initial_date: str | None = None, initial_time: str | None = None,
                 initial_datetime: str | None = None, value: Mapping[str, Any] | None = None,
                 confirm: Mapping[str, Any] | None = None) -> None:
        if tag == "plain_text":  # the original's ``tag`` named the placeholder's text tag
            tag = "date_picker"
        super().__init__(tag=_choice("date picker tag", tag, DATE_PICKER_TAGS),
                         placeholder=_text(content, what="placeholder"))
        _interactive_extras(self, {}, initial_date=initial_date, initial_time=initial_time,
                            initial_datetime=initial_datetime, value=value, confirm=confirm)


class FeishuMessageColumn(CardElement):
    """``{"tag": "column", "width", "weight", "vertical_align", "elements"}``; weight 1..5."""

    def __init__(self, *elements: Any, width: str = "weighted", weight: int = 1,
                 vertical_align: str = "top") -> None:
        if width not in ("auto", "weighted") and not re.fullmatch(r"\d+px", str(width)):
            raise _fail(f"column width must be 'auto', 'weighted' or '<n>px', not {width!r}")
        if width == "weighted" and (not isinstance(weight, int) or
                                    not COLUMN_WEIGHT_MIN <= weight <= COLUMN_WEIGHT_MAX):
            raise _fail(f"column weight must be an integer {COLUMN_WEIGHT_MIN}..{COLUMN_WEIGHT_MAX}, "
                        f"not {weight!r}")
        super().__init__(tag="column", width=width, weight=weight,
                         vertical_align=_choice("vertical_align", vertical_align, VERTICAL_ALIGNS),
                         elements=_children(elements, "column elements"))


class FeishuMessageColumnSet(CardElement):
    """``{"tag": "column_set", "flex_mode", "background_style", "columns"}``."""

    def __init__(self, *columns: Any, flex_mode: str = "none", background_style: str = "grey",
                 horizontal_spacing: str | None = None) -> None:
        for c in columns:
            if not isinstance(c, Mapping) or c.get("tag") != "column":
                raise _fail("column_set takes FeishuMessageColumn elements")
        super().__init__(tag="column_set", flex_mode=_choice("flex_mode", flex_mode, FLEX_MODES),
                         background_style=background_style, columns=list(columns))
        if horizontal_spacing is not None:
            self["horizontal_spacing"] = horizontal_spacing


class FeishuMessageCardConfig(CardElement):
    """``{"update_multi", "enable_forward", "wide_screen_mode"}``.

    ``update_multi=True`` makes an update visible to everyone (required to PATCH shared cards).
    """

    def __init__(self, update_multi: bool = True, enable_forward: bool = True,
                 wide_screen_mode: bool = True) -> None:
        super().__init__(update_multi=bool(update_multi), enable_forward=bool(enable_forward),
                         wide_screen_mode=bool(wide_screen_mode))


class FeishuMessageCardHeader(CardElement):
    """``{"title": {"tag": "plain_text", "content"}, "template": colour}``; the title cannot be empty."""

    def __init__(self, content: str = "", tag: str = "plain_text", template: str = "blue") -> None:
        if not isinstance(content, str) or not content.strip():
            raise _fail("card header needs a non-empty title")
        super().__init__(title=_text(content, tag, "header title"),
                         template=_choice("header template", template, HEADER_TEMPLATES))


class FeishuMessageCard(CardElement):
    """A message card (``msg_type = "interactive"``): ``{"config", "header"?, "elements": [...]}``.

    ``header`` is a :class:`FeishuMessageCardHeader` or a title string; without one the card has no
    header. ``config`` defaults to :class:`FeishuMessageCardConfig()`. :meth:`to_dict` (and sending)
    raises :class:`CardValidationError` over 30 KB.
    """

    msg_type = "interactive"

    def __init__(self, *elements: Any, header: Any = None, config: Mapping[str, Any] | None = None) -> None:
        if isinstance(header, str):
            header = FeishuMessageCardHeader(header)
        super().__init__(config=dict(config) if config is not None else FeishuMessageCardConfig())
        if header:
            self["header"] = header
        self["elements"] = _children(elements, "card elements")
        card_json(self)

    def to_dict(self) -> dict[str, Any]:
        """A plain deep copy; raises :class:`CardValidationError` when the JSON exceeds 30 KB."""
        card_json(self)
        return super().to_dict()


# -- card callback responses (protocol.md §6a) ------------------------------------------------------


class Toast(CardElement):
    """``{"type": "info"|"success"|"error"|"warning", "content", "i18n"?: {"zh_cn", "en_us", ...}}``."""

    def __init__(self, content: str, type: str = "info", i18n: Mapping[str, str] | None = None) -> None:
        if not content and not i18n:
            raise _fail("toast needs content")
        super().__init__(type=_choice("toast type", type, TOAST_TYPES), content=content)
        if i18n is not None:
            self["i18n"] = dict(i18n)


class TemplateCard(CardElement):
    """A card built from a template: ``{"template_id", "template_version_name"?, "template_variable"?}``."""

    def __init__(self, template_id: str, template_variable: Mapping[str, Any] | None = None,
                 template_version_name: str | None = None) -> None:
        if not template_id:
            raise _fail("template card needs a template_id")
        super().__init__(template_id=template_id)
        if template_version_name is not None:
            self["template_version_name"] = template_version_name
        if template_variable is not None:
            self["template_variable"] = dict(template_variable)


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
                self["card"] = {"type": "template", "data": card.to_dict()}
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
