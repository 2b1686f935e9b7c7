"""JSON 2.0 cards (cards/v2.py), the template shape, and the cards the fake OpenAPI accepts (issue 20)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wslarkbot.cards import FeishuMessageAction, FeishuMessageButton, FeishuMessageNote, TemplateCard, v2
from wslarkbot.exceptions import CardValidationError, ConfigurationError, FeishuAPIError
from wslarkbot.openapi import OpenAPIClient
from wslarkbot.sim.openapi_server import FakeOpenAPI


def test_a_v2_card_has_schema_config_header_and_body_elements() -> None:
    card = v2.Card(
        v2.Markdown("**hi**", element_id="intro"),
        v2.Columns(v2.Column(v2.Div("left")), v2.Column(v2.Image("img_v3_x", "cat"), weight=2)),
        v2.Hr(),
        v2.Form(
            v2.Input("reason", placeholder="why?", required=True),
            v2.Button("Send", type="primary", name="send", form_action_type="submit"),
            name="f1",
        ),
        v2.CollapsiblePanel("More", v2.Markdown("details")),
        v2.Button("Docs", url="https://open.feishu.cn"),
        header=v2.Header("Title", subtitle="sub", template="green"),
        streaming=True,
        summary="a card",
    ).to_dict()
    assert card["schema"] == "2.0" and card["config"]["streaming_mode"] is True
    assert card["config"]["summary"] == {"content": "a card"}
    assert card["header"]["template"] == "green"
    tags = [e["tag"] for e in card["body"]["elements"]]
    assert tags == ["markdown", "column_set", "hr", "form", "collapsible_panel", "button"]
    assert card["body"]["elements"][-1]["behaviors"] == [
        {"type": "open_url", "default_url": "https://open.feishu.cn"}
    ]
    form = card["body"]["elements"][3]
    assert form["elements"][1]["form_action_type"] == "submit"


@pytest.mark.parametrize(
    "build",
    [
        lambda: v2.Card(v2.Markdown("a", element_id="x"), v2.Markdown("b", element_id="x")),
        lambda: v2.Card(v2.Form(v2.Input("n"), name="f")),
        lambda: v2.Card(FeishuMessageNote(FeishuMessageButton("x"))),
        lambda: v2.Card(FeishuMessageAction(FeishuMessageButton("x"))),
        lambda: v2.Card(v2.Markdown("a", element_id="1bad")),
        lambda: v2.Card(v2.Markdown("x" * 40_000)),
        lambda: v2.Card(v2.Button("x", form_action_type="submit")),
        lambda: v2.Card(
            v2.Form(v2.Button("s", name="s", form_action_type="submit"), name="f"),
            v2.Form(v2.Button("s", name="t", form_action_type="submit"), name="f"),
        ),
        lambda: v2.Column(v2.Markdown("a"), weight=9),
        lambda: v2.Image(""),
    ],
    ids=[
        "dup-id",
        "form-no-submit",
        "note",
        "action",
        "bad-id",
        "too-big",
        "unnamed-form-button",
        "dup-form",
        "weight",
        "no-img-key",
    ],
)
def test_invalid_v2_cards_are_refused_at_to_dict_or_construction(build: object) -> None:
    with pytest.raises(CardValidationError):
        card = build()  # type: ignore[operator]
        card.to_dict()


def test_a_template_card_is_type_template_with_data() -> None:
    card = TemplateCard("AAqi6xJ8rabcd", {"name": "x"}, "1.0.0")
    assert card.to_dict() == {
        "type": "template",
        "data": {
            "template_id": "AAqi6xJ8rabcd",
            "template_version_name": "1.0.0",
            "template_variable": {"name": "x"},
        },
    }
    assert card.msg_type == "interactive"


@pytest.fixture
def api() -> Iterator[OpenAPIClient]:
    with FakeOpenAPI() as fake, OpenAPIClient("cli_cards", "s", fake.url) as client:
        fake.add_app("cli_cards", "s")
        yield client


def test_the_fake_takes_v1_v2_and_template_cards_and_refuses_a_bare_template(api: OpenAPIClient) -> None:
    assert api.send_card("ou_1", v2.Card(v2.Markdown("hi")))["message_id"]
    assert api.send_card("ou_1", TemplateCard("AAqi6xJ8rabcd"))["message_id"]
    assert api.send_card("ou_1", {"elements": [{"tag": "markdown", "content": "1.0"}]})["message_id"]
    with pytest.raises(FeishuAPIError) as err:
        api.send_card("ou_1", {"template_id": "AAqi6xJ8rabcd"})
    assert err.value.code == 230099
    with pytest.raises(FeishuAPIError):
        api.send_card("ou_1", {"type": "card", "data": {"card_id": "7000"}})  # no such card entity


def test_card_entities_take_v2_cards_only(api: OpenAPIClient) -> None:
    with pytest.raises(ConfigurationError, match=r"2\.0"):
        api.create_card({"elements": []})
    card_id = api.create_card(v2.Card(v2.Markdown("x", element_id="answer"), streaming=True))["card_id"]
    from wslarkbot.openapi.cardkit import card_content

    assert api.send("ou_1", card_content(card_id), "interactive")["message_id"]
