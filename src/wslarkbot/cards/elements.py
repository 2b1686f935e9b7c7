"""Display elements and layout: text objects, div, hr, markdown, image, note, columns, and the card itself."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .base import (
    COLUMN_WEIGHT_MAX,
    COLUMN_WEIGHT_MIN,
    FLEX_MODES,
    HEADER_TEMPLATES,
    IMAGE_MODES,
    VERTICAL_ALIGNS,
    CardElement,
    _children,
    _choice,
    _fail,
    _text,
    card_json,
)

__all__ = [
    "FeishuMessageCard",
    "FeishuMessageCardConfig",
    "FeishuMessageCardHeader",
    "FeishuMessageColumn",
    "FeishuMessageColumnSet",
    "FeishuMessageDiv",
    "FeishuMessageHr",
    "FeishuMessageImage",
    "FeishuMessageLarkMD",
    "FeishuMessageMDText",
    "FeishuMessageMarkdown",
    "FeishuMessageNote",
    "FeishuMessagePlainText",
]


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

    def __init__(
        self,
        content: Any = "",
        tag: str = "plain_text",
        *,
        fields: list[Any] | None = None,
        extra: Any = None,
        **kwargs: Any,
    ) -> None:
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

    def __init__(
        self,
        img_key: str = "",
        alt: str = "",
        tag: str = "plain_text",
        mode: str = "fit_horizontal",
        preview: bool = True,
        *,
        title: Any = None,
    ) -> None:
        if not img_key:
            raise _fail("image needs an img_key (upload the image first)")
        super().__init__(
            tag="img",
            img_key=img_key,
            alt=_text(alt, tag or "plain_text", "image alt"),
            mode=_choice("image mode", mode, IMAGE_MODES),
            preview=bool(preview),
        )
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


class FeishuMessageColumn(CardElement):
    """``{"tag": "column", "width", "weight", "vertical_align", "elements"}``; weight 1..5."""

    def __init__(
        self, *elements: Any, width: str = "weighted", weight: int = 1, vertical_align: str = "top"
    ) -> None:
        if width not in ("auto", "weighted") and not re.fullmatch(r"\d+px", str(width)):
            raise _fail(f"column width must be 'auto', 'weighted' or '<n>px', not {width!r}")
        if width == "weighted" and (
            not isinstance(weight, int) or not COLUMN_WEIGHT_MIN <= weight <= COLUMN_WEIGHT_MAX
        ):
            raise _fail(
                f"column weight must be an integer {COLUMN_WEIGHT_MIN}..{COLUMN_WEIGHT_MAX}, not {weight!r}"
            )
        super().__init__(
            tag="column",
            width=width,
            weight=weight,
            vertical_align=_choice("vertical_align", vertical_align, VERTICAL_ALIGNS),
            elements=_children(elements, "column elements"),
        )


class FeishuMessageColumnSet(CardElement):
    """``{"tag": "column_set", "flex_mode", "background_style", "columns"}``."""

    def __init__(
        self,
        *columns: Any,
        flex_mode: str = "none",
        background_style: str = "grey",
        horizontal_spacing: str | None = None,
    ) -> None:
        for c in columns:
            if not isinstance(c, Mapping) or c.get("tag") != "column":
                raise _fail("column_set takes FeishuMessageColumn elements")
        super().__init__(
            tag="column_set",
            flex_mode=_choice("flex_mode", flex_mode, FLEX_MODES),
            background_style=background_style,
            columns=list(columns),
        )
        if horizontal_spacing is not None:
            self["horizontal_spacing"] = horizontal_spacing


class FeishuMessageCardConfig(CardElement):
    """``{"update_multi", "enable_forward", "wide_screen_mode"}``.

    ``update_multi=True`` makes an update visible to everyone (required to PATCH shared cards).
    """

    def __init__(
        self, update_multi: bool = True, enable_forward: bool = True, wide_screen_mode: bool = True
    ) -> None:
        super().__init__(
            update_multi=bool(update_multi),
            enable_forward=bool(enable_forward),
            wide_screen_mode=bool(wide_screen_mode),
        )


class FeishuMessageCardHeader(CardElement):
    """``{"title": {"tag": "plain_text", "content"}, "template": colour}``; the title cannot be empty."""

    def __init__(self, content: str = "", tag: str = "plain_text", template: str = "blue") -> None:
        if not isinstance(content, str) or not content.strip():
            raise _fail("card header needs a non-empty title")
        super().__init__(
            title=_text(content, tag, "header title"),
            template=_choice("header template", template, HEADER_TEMPLATES),
        )


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
