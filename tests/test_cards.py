"""Message card builders produce Feishu's documented JSON 1.0 shapes and reject invalid input."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from wslarkbot.cards import (
    MAX_ACTIONS,
    MAX_CARD_BYTES,
    CardActionResponse,
    FeishuMessageAction,
    FeishuMessageButton,
    FeishuMessageCard,
    FeishuMessageCardConfig,
    FeishuMessageCardHeader,
    FeishuMessageColumn,
    FeishuMessageColumnSet,
    FeishuMessageConfirm,
    FeishuMessageDatePicker,
    FeishuMessageDiv,
    FeishuMessageHr,
    FeishuMessageImage,
    FeishuMessageLarkMD,
    FeishuMessageMarkdown,
    FeishuMessageMDText,
    FeishuMessageNote,
    FeishuMessageOption,
    FeishuMessageOverflow,
    FeishuMessagePlainText,
    FeishuMessageSelect,
    FeishuMessageSelectPerson,
    TemplateCard,
    Toast,
)
from wslarkbot.exceptions import CardValidationError


def load(samples_dir: pathlib.Path, name: str) -> Any:
    return json.loads((samples_dir / name).read_text(encoding="utf-8"))


def test_card_with_header_config_and_elements_has_the_documented_shape() -> None:
    card = FeishuMessageCard(
        FeishuMessageDiv("**hi**", tag="lark_md"),
        FeishuMessageHr(),
        header=FeishuMessageCardHeader("Title", template="green"),
    )
    assert card.to_dict() == {
        "config": {"update_multi": True, "enable_forward": True, "wide_screen_mode": True},
        "header": {"title": {"tag": "plain_text", "content": "Title"}, "template": "green"},
        "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": "**hi**"}}, {"tag": "hr"}],
    }
    assert card.msg_type == "interactive"


def test_json_dumps_works_on_the_card_directly_and_equals_to_dict() -> None:
    card = FeishuMessageCard(FeishuMessageNote("a", FeishuMessageMDText("*b*")), header="T")
    assert json.loads(json.dumps(card)) == card.to_dict()
    assert card["header"]["template"] == "blue"


def test_card_without_header_has_no_header_key() -> None:
    assert "header" not in FeishuMessageCard(FeishuMessageHr())


def test_text_objects_and_div_fields() -> None:
    assert FeishuMessagePlainText("p") == {"tag": "plain_text", "content": "p"}
    assert FeishuMessageMDText("m") == {"tag": "lark_md", "content": "m"}
    field = FeishuMessageLarkMD("**k**\nv", is_short=True)
    assert field == {"is_short": True, "text": {"tag": "lark_md", "content": "**k**\nv"}}
    div = FeishuMessageDiv(fields=[field], extra=FeishuMessageButton("Go", value={"a": 1}))
    assert div.to_dict() == {
        "tag": "div",
        "fields": [{"is_short": True, "text": {"tag": "lark_md", "content": "**k**\nv"}}],
        "extra": {
            "tag": "button",
            "text": {"tag": "plain_text", "content": "Go"},
            "type": "default",
            "value": {"a": 1},
        },
    }
    assert FeishuMessageDiv(FeishuMessageMDText("x"))["text"] == {"tag": "lark_md", "content": "x"}


def test_markdown_image_and_note_shapes() -> None:
    assert FeishuMessageMarkdown("**b**", text_align="center") == {
        "tag": "markdown",
        "content": "**b**",
        "text_align": "center",
    }
    assert FeishuMessageImage("img_v2_x", alt="pic") == {
        "tag": "img",
        "img_key": "img_v2_x",
        "alt": {"tag": "plain_text", "content": "pic"},
        "mode": "fit_horizontal",
        "preview": True,
    }
    assert FeishuMessageNote("n", FeishuMessageImage("img_1")).to_dict()["elements"][0] == {
        "tag": "plain_text",
        "content": "n",
    }


def test_button_action_and_confirm_shapes() -> None:
    confirm = FeishuMessageConfirm("Sure?", "It cannot be undone")
    button = FeishuMessageButton("Delete", value={"op": "del"}, type="danger", confirm=confirm)
    link = FeishuMessageButton("Docs", url="https://open.feishu.cn")
    action = FeishuMessageAction(button, link, layout="bisected")
    assert action.to_dict() == {
        "tag": "action",
        "layout": "bisected",
        "actions": [
            {
                "tag": "button",
                "text": {"tag": "plain_text", "content": "Delete"},
                "type": "danger",
                "value": {"op": "del"},
                "confirm": {
                    "title": {"tag": "plain_text", "content": "Sure?"},
                    "text": {"tag": "plain_text", "content": "It cannot be undone"},
                },
            },
            {
                "tag": "button",
                "text": {"tag": "plain_text", "content": "Docs"},
                "type": "default",
                "value": {},
                "url": "https://open.feishu.cn",
            },
        ],
    }


def test_select_accepts_original_and_placeholder_first_forms() -> None:
    a, b = FeishuMessageOption("v1", "One"), FeishuMessageOption("v2")
    assert a == {"value": "v1", "text": {"tag": "plain_text", "content": "One"}}
    assert b["text"]["content"] == "v2"
    original = FeishuMessageSelect(a, b, placeholder="Pick", initial_option="v2", value={"k": 1})
    assert FeishuMessageSelect("Pick", a, b, initial_option="v2", value={"k": 1}) == original
    assert original.to_dict() == {
        "tag": "select_static",
        "placeholder": {"tag": "plain_text", "content": "Pick"},
        "options": [
            {"value": "v1", "text": {"tag": "plain_text", "content": "One"}},
            {"value": "v2", "text": {"tag": "plain_text", "content": "v2"}},
        ],
        "initial_option": "v2",
        "value": {"k": 1},
    }


def test_overflow_select_person_and_date_picker_shapes() -> None:
    assert FeishuMessageOverflow(FeishuMessageOption("o")).to_dict() == {
        "tag": "overflow",
        "options": [{"value": "o", "text": {"tag": "plain_text", "content": "o"}}],
    }
    assert FeishuMessageSelectPerson("ou_1", placeholder="Who").to_dict() == {
        "tag": "select_person",
        "placeholder": {"tag": "plain_text", "content": "Who"},
        "options": [{"value": "ou_1"}],
    }
    assert FeishuMessageDatePicker("When", initial_date="2026-01-01").to_dict() == {
        "tag": "date_picker",
        "placeholder": {"tag": "plain_text", "content": "When"},
        "initial_date": "2026-01-01",
    }


def test_column_set_shape() -> None:
    column_set = FeishuMessageColumnSet(
        FeishuMessageColumn(FeishuMessageMarkdown("a"), weight=2),
        FeishuMessageColumn(FeishuMessageMarkdown("b"), width="auto", vertical_align="center"),
        flex_mode="bisect",
        background_style="default",
    )
    assert column_set.to_dict() == {
        "tag": "column_set",
        "flex_mode": "bisect",
        "background_style": "default",
        "columns": [
            {
                "tag": "column",
                "width": "weighted",
                "weight": 2,
                "vertical_align": "top",
                "elements": [{"tag": "markdown", "content": "a"}],
            },
            {
                "tag": "column",
                "width": "auto",
                "weight": 1,
                "vertical_align": "center",
                "elements": [{"tag": "markdown", "content": "b"}],
            },
        ],
    }


def test_config_defaults_follow_the_original_project() -> None:
    assert FeishuMessageCardConfig(update_multi=False) == {
        "update_multi": False,
        "enable_forward": True,
        "wide_screen_mode": True,
    }


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: FeishuMessageCardHeader("T", template="pink"), "header template"),
        (lambda: FeishuMessageCardHeader("  "), "non-empty title"),
        (lambda: FeishuMessageButton("x", type="huge"), "button type"),
        (lambda: FeishuMessageButton("x", value="v"), "value must be a dict"),
        (lambda: FeishuMessageAction(*[FeishuMessageButton("b")] * (MAX_ACTIONS + 1)), "actions"),
        (lambda: FeishuMessageAction(), "actions"),
        (lambda: FeishuMessageAction(FeishuMessageButton("b"), layout="grid"), "layout"),
        (lambda: FeishuMessageColumn(weight=6), "weight"),
        (lambda: FeishuMessageColumn(weight=0), "weight"),
        (lambda: FeishuMessageColumnSet(FeishuMessageHr()), "FeishuMessageColumn"),
        (lambda: FeishuMessageDiv("x", tag="html"), "text tag"),
        (lambda: FeishuMessageSelect("Pick"), "at least one option"),
        (lambda: FeishuMessageSelect(FeishuMessageOption("a"), initial_option="b"), "initial_option"),
        (lambda: FeishuMessageImage(""), "img_key"),
        (lambda: FeishuMessageNote(FeishuMessageHr()), "note elements"),
        (lambda: FeishuMessageCard("not an element"), "card elements"),
        (lambda: Toast("x", type="fatal"), "toast type"),
    ],
)
def test_invalid_input_raises_card_validation_error(build: Any, message: str) -> None:
    with pytest.raises(CardValidationError, match=message):
        build()


def test_card_over_30_kb_is_rejected_at_construction_and_at_to_dict() -> None:
    with pytest.raises(CardValidationError, match="30720"):
        FeishuMessageCard(FeishuMessageMarkdown("x" * MAX_CARD_BYTES))
    card = FeishuMessageCard(FeishuMessageMarkdown("small"))
    card["elements"].append(FeishuMessageMarkdown("y" * MAX_CARD_BYTES))
    with pytest.raises(CardValidationError):
        card.to_dict()


def test_card_action_response_template_matches_the_sample(samples_dir: pathlib.Path) -> None:
    sample = load(samples_dir, "card.action.trigger.response.template.json")
    response = CardActionResponse(
        toast=Toast("卡片交互成功", i18n={"zh_cn": "卡片交互成功", "en_us": "card action success"}),
        card=TemplateCard("AAqi6xJ8rabcd", {"open_id": "ou_d506829e8b6a17607e56bcd6b1aabcef"}, "1.0.0"),
    )
    assert response.to_dict() == sample


def test_card_action_response_raw_card_matches_the_sample(samples_dir: pathlib.Path) -> None:
    sample = load(samples_dir, "card.action.trigger.response.raw.json")
    response = CardActionResponse(toast=Toast(**sample["toast"]), card=sample["card"]["data"])
    assert json.loads(json.dumps(response)) == sample


def test_card_action_response_with_builder_card_and_string_toast() -> None:
    card = FeishuMessageCard(FeishuMessageHr())
    response = CardActionResponse("saved", card)
    assert response.to_dict() == {
        "toast": {"type": "info", "content": "saved"},
        "card": {"type": "raw", "data": card.to_dict()},
    }
    assert CardActionResponse().to_dict() == {}
    with pytest.raises(CardValidationError):
        CardActionResponse(card=42)
