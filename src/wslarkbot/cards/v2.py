"""Message cards in Feishu's JSON 2.0 (``"schema": "2.0"``, ``body.elements``), the structure current
cards, CardKit card entities and streaming use (docs/openapi.md "Cards").

::

    from wslarkbot.cards import v2

    card = v2.Card(
        v2.Markdown("**Deploy** finished", element_id="summary"),
        v2.Columns(v2.Column(v2.Markdown("env: prod")), v2.Column(v2.Markdown("took: 42 s"))),
        v2.Hr(),
        v2.Form(
            v2.Input("reason", placeholder="why?", required=True),
            v2.Button("Roll back", type="danger", name="rollback", form_action_type="submit"),
            name="rollback_form",
        ),
        v2.CollapsiblePanel("Logs", v2.Markdown("```\\n...\\n```")),
        header=v2.Header("Release 1.2", template="green"),
    )
    api.send_card("ou_xxx", card)

Each builder is a ``dict`` of Feishu's JSON, checked in its constructor; :meth:`Card.to_dict` checks the
whole card (unique ``element_id`` values, form rules, the 30 KB limit) and raises
:class:`~wslarkbot.exceptions.CardValidationError`. JSON 1.0 parts that 2.0 dropped (``action`` blocks,
``note``) are refused with a pointer to what replaces them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from .base import BUTTON_TYPES, HEADER_TEMPLATES, CardElement, _choice, _fail, _plain, card_json

__all__ = [
    "ELEMENT_ID_RE",
    "Button",
    "Card",
    "CollapsiblePanel",
    "Column",
    "Columns",
    "Div",
    "Form",
    "Header",
    "Hr",
    "Image",
    "Input",
    "Markdown",
]

#: ``element_id``: starts with a letter; letters, digits and ``_``; at most 20 characters.
ELEMENT_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,19}\Z")
#: The body elements this builder knows (what Feishu's 2.0 body accepts is a superset).
ELEMENT_TAGS = frozenset(
    {
        "markdown",
        "div",
        "hr",
        "column_set",
        "img",
        "button",
        "form",
        "input",
        "collapsible_panel",
        "plain_text",
        "select_static",
        "multi_select_static",
        "date_picker",
        "picker_time",
        "picker_datetime",
        "checker",
        "chart",
        "table",
        "img_combination",
        "person",
        "person_list",
        "overflow",
        "select_person",
        "multi_select_person",
        "select_img",
        "interactive_container",
    }
)
_DROPPED = {
    "action": "2.0 has no action block: put buttons in the body (or in a Columns row)",
    "note": "2.0 has no note element: use Markdown with text_size='notation'",
}
TEXT_SIZES = frozenset({"heading-0", "heading-1", "heading", "normal", "notation", "xxxx-large", "xx-large"})
TEXT_ALIGNS = frozenset({"left", "center", "right"})
FORM_ACTIONS = frozenset({"submit", "reset"})
COLUMN_WIDTHS = frozenset({"auto", "weighted"})


def _with_id(element: dict[str, Any], element_id: str | None) -> dict[str, Any]:
    if element_id is not None:
        if not isinstance(element_id, str) or not ELEMENT_ID_RE.match(element_id):
            raise _fail(
                f"element_id {element_id!r}: a letter, then letters, digits or '_', at most 20 characters"
            )
        element["element_id"] = element_id
    return element


def _elements(items: tuple[Any, ...], what: str) -> list[Any]:
    out = []
    for item in items:
        if not isinstance(item, Mapping) and not callable(getattr(item, "to_dict", None)):
            raise _fail(f"{what} must be card elements, not {type(item).__name__}")
        tag = item.get("tag") if isinstance(item, Mapping) else None
        if tag in _DROPPED:
            raise _fail(f"{what}: {_DROPPED[tag]}")
        if isinstance(item, Mapping) and tag not in ELEMENT_TAGS:
            raise _fail(f"{what}: {tag!r} is not a JSON 2.0 element")
        out.append(item)
    return out


def _plain_text(content: str, what: str) -> dict[str, str]:
    if not isinstance(content, str) or not content:
        raise _fail(f"{what} must be a non-empty string")
    return {"tag": "plain_text", "content": content}


class Markdown(CardElement):
    """``{"tag": "markdown", "content"}``: Feishu's markdown (the element to stream text into)."""

    def __init__(
        self,
        content: str,
        *,
        element_id: str | None = None,
        text_size: str | None = None,
        text_align: str | None = None,
    ) -> None:
        if not isinstance(content, str):
            raise _fail("markdown content must be a string")
        element: dict[str, Any] = {"tag": "markdown", "content": content}
        if text_size is not None:
            element["text_size"] = _choice("text_size", text_size, TEXT_SIZES)
        if text_align is not None:
            element["text_align"] = _choice("text_align", text_align, TEXT_ALIGNS)
        super().__init__(_with_id(element, element_id))


class Div(CardElement):
    """``{"tag": "div", "text": {"tag": "plain_text" | "lark_md", "content"}}``."""

    def __init__(self, content: str, *, markdown: bool = False, element_id: str | None = None) -> None:
        text = _plain_text(content, "div text")
        if markdown:
            text["tag"] = "lark_md"
        super().__init__(_with_id({"tag": "div", "text": text}, element_id))


class Hr(CardElement):
    """``{"tag": "hr"}``: a divider."""

    def __init__(self, *, element_id: str | None = None) -> None:
        super().__init__(_with_id({"tag": "hr"}, element_id))


class Image(CardElement):
    """``{"tag": "img", "img_key", "alt"}``: an image uploaded with ``api.upload_image``."""

    def __init__(
        self, img_key: str, alt: str = "", *, title: str | None = None, element_id: str | None = None
    ) -> None:
        if not isinstance(img_key, str) or not img_key:
            raise _fail("image needs an img_key (api.upload_image(...)['image_key'])")
        element: dict[str, Any] = {"tag": "img", "img_key": img_key}
        element["alt"] = {"tag": "plain_text", "content": alt}
        if title is not None:
            element["title"] = _plain_text(title, "image title")
        super().__init__(_with_id(element, element_id))


class Column(CardElement):
    """One column of :class:`Columns`: ``{"tag": "column", "width", "weight"?, "elements"}``."""

    def __init__(self, *elements: Any, width: str = "weighted", weight: int = 1) -> None:
        column: dict[str, Any] = {
            "tag": "column",
            "width": _choice("column width", width, COLUMN_WIDTHS),
            "elements": _elements(elements, "column elements"),
        }
        if width == "weighted":
            if not isinstance(weight, int) or not 1 <= weight <= 5:
                raise _fail("column weight must be 1..5")
            column["weight"] = weight
        super().__init__(column)


class Columns(CardElement):
    """``{"tag": "column_set", "columns": [...]}``: a row of :class:`Column`."""

    def __init__(self, *columns: Column, element_id: str | None = None) -> None:
        if not columns or not all(isinstance(c, Mapping) and c.get("tag") == "column" for c in columns):
            raise _fail("Columns takes one or more Column")
        super().__init__(_with_id({"tag": "column_set", "columns": list(columns)}, element_id))


class Button(CardElement):
    """``{"tag": "button", "text", "type", "behaviors": [...]}``.

    Args:
        value: sent back in the callback (``behaviors: [{"type": "callback", "value"}]``).
        url: open a link (``{"type": "open_url", "default_url"}``).
        name, form_action_type: inside a :class:`Form`, ``submit`` or ``reset`` it (``name`` required).
    """

    def __init__(
        self,
        text: str,
        *,
        type: str = "default",
        value: Mapping[str, Any] | None = None,
        url: str | None = None,
        name: str | None = None,
        form_action_type: str | None = None,
        element_id: str | None = None,
    ) -> None:
        button: dict[str, Any] = {
            "tag": "button",
            "text": _plain_text(text, "button text"),
            "type": _choice("button type", type, BUTTON_TYPES),
        }
        behaviors: list[dict[str, Any]] = []
        if value is not None:
            if not isinstance(value, Mapping):
                raise _fail("button value must be a dict")
            behaviors.append({"type": "callback", "value": dict(value)})
        if url is not None:
            behaviors.append({"type": "open_url", "default_url": url})
        if behaviors:
            button["behaviors"] = behaviors
        if form_action_type is not None:
            button["form_action_type"] = _choice("form_action_type", form_action_type, FORM_ACTIONS)
            if not name:
                raise _fail("a form button needs a name")
        if name is not None:
            button["name"] = name
        super().__init__(_with_id(button, element_id))


class Input(CardElement):
    """``{"tag": "input", "name", "placeholder"?, "label"?, "required"}``: a text field of a :class:`Form`."""

    def __init__(
        self,
        name: str,
        *,
        placeholder: str | None = None,
        label: str | None = None,
        required: bool = False,
        element_id: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise _fail("input needs a name (the key of its value in the callback's form_value)")
        element: dict[str, Any] = {"tag": "input", "name": name, "required": bool(required)}
        if placeholder is not None:
            element["placeholder"] = _plain_text(placeholder, "input placeholder")
        if label is not None:
            element["label"] = _plain_text(label, "input label")
        super().__init__(_with_id(element, element_id))


class Form(CardElement):
    """``{"tag": "form", "name", "elements"}``: its fields are sent together by its submit button."""

    def __init__(self, *elements: Any, name: str, element_id: str | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise _fail("form needs a name")
        items = _elements(elements, "form elements")
        if not any(isinstance(e, Mapping) and e.get("form_action_type") == "submit" for e in _walk(items)):
            raise _fail(f"form {name!r} needs a Button(..., form_action_type='submit')")
        super().__init__(_with_id({"tag": "form", "name": name, "elements": items}, element_id))


class CollapsiblePanel(CardElement):
    """``{"tag": "collapsible_panel", "expanded", "header": {"title"}, "elements"}``: folded content."""

    def __init__(
        self, title: str, *elements: Any, expanded: bool = False, element_id: str | None = None
    ) -> None:
        panel = {
            "tag": "collapsible_panel",
            "expanded": bool(expanded),
            "header": {"title": {"tag": "markdown", "content": _plain_text(title, "panel title")["content"]}},
            "elements": _elements(elements, "panel elements"),
        }
        super().__init__(_with_id(panel, element_id))


class Header(CardElement):
    """``{"title", "subtitle"?, "template"}``: the card's coloured title bar."""

    def __init__(self, title: str, *, subtitle: str | None = None, template: str = "blue") -> None:
        header: dict[str, Any] = {
            "title": _plain_text(title, "header title"),
            "template": _choice("header template", template, HEADER_TEMPLATES),
        }
        if subtitle is not None:
            header["subtitle"] = _plain_text(subtitle, "header subtitle")
        super().__init__(header)


class Card(CardElement):
    """A JSON 2.0 card (``msg_type = "interactive"``): ``{"schema": "2.0", "config", "header"?, "body"}``.

    Args:
        streaming: ``config.streaming_mode`` (a CardKit card entity whose text is streamed; see
            :mod:`wslarkbot.streaming`).
        summary: what chat lists show for the card (``config.summary``).
        update_multi: every viewer sees updates (on by default; Feishu's 2.0 cards require it).
    """

    msg_type = "interactive"

    def __init__(
        self,
        *elements: Any,
        header: Header | Mapping[str, Any] | None = None,
        streaming: bool = False,
        summary: str | None = None,
        update_multi: bool = True,
    ) -> None:
        config: dict[str, Any] = {"update_multi": bool(update_multi)}
        if streaming:
            config["streaming_mode"] = True
        if summary is not None:
            config["summary"] = {"content": summary}
        card: dict[str, Any] = {"schema": "2.0", "config": config}
        if header is not None:
            card["header"] = dict(header)
        card["body"] = {"elements": _elements(elements, "card elements")}
        super().__init__(card)

    def to_dict(self) -> dict[str, Any]:
        """The card as plain JSON, checked: unique element ids, unique form names, at most 30 KB."""
        data: dict[str, Any] = _plain(self)
        seen: set[str] = set()
        forms: set[str] = set()
        for element in _walk(data["body"]["elements"]):
            eid = element.get("element_id")
            if eid is not None:
                if eid in seen:
                    raise _fail(f"element_id {eid!r} is used twice")
                seen.add(eid)
            if element.get("tag") == "form":
                if element["name"] in forms:
                    raise _fail(f"form name {element['name']!r} is used twice")
                forms.add(element["name"])
        card_json(data)
        return data


def _walk(elements: list[Any]) -> Iterator[Mapping[str, Any]]:
    """Every element, nested ones included (columns, forms, panels)."""
    for element in elements:
        if not isinstance(element, Mapping):
            continue
        yield element
        for key in ("elements", "columns"):
            children = element.get(key)
            if isinstance(children, list):
                yield from _walk(children)
