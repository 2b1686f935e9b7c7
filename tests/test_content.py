"""Typed message contents and @mentions (wslarkbot.content, MessageEvent accessors), without sockets."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from wslarkbot.content import (
    Mention,
    ReceivedCard,
    ReceivedFile,
    ReceivedImage,
    ReceivedOther,
    ReceivedPost,
    ReceivedText,
    parse_content,
    replace_mentions,
    strip_mentions,
)
from wslarkbot.events import MessageEvent, parse_payload
from wslarkbot.sim import SimApp, payloads


def message(payload: dict[str, Any]) -> MessageEvent:
    event = parse_payload(payload)
    assert isinstance(event, MessageEvent)
    return event


def with_content(app: SimApp, message_type: str, content: dict[str, Any]) -> MessageEvent:
    payload = payloads.text_message(app, "x")
    payload["event"]["message"].update(message_type=message_type, content=json.dumps(content))
    return message(payload)


# -- mentions ---------------------------------------------------------------------------------------------


def test_group_message_at_the_bot_mentions_it_by_open_id_name_or_any_mention(sim_app: SimApp) -> None:
    event = message(payloads.text_message(sim_app, "what's up?", chat_type="group", at_bot=True))
    assert event.is_group
    assert event.mentions_bot(sim_app.bot_open_id)
    assert event.mentions_bot(bot_name=sim_app.bot_name)
    assert event.mentions_bot() and event.is_mentioned
    assert event.text == "@_user_1 what's up?"
    assert event.text_without_mentions == "what's up?"


def test_mention_of_someone_else_is_not_the_bot_when_its_identity_is_known(sim_app: SimApp) -> None:
    tom = payloads.mention("Tom", index=1)
    event = message(payloads.text_message(sim_app, "@_user_1 look", chat_type="group", mentions=[tom]))
    assert not event.mentions_bot(sim_app.bot_open_id)
    assert not event.mentions_bot(bot_name=sim_app.bot_name)
    assert event.mentions_bot(), "without an identity any mention counts"
    assert [m.name for m in event.mention_list] == ["Tom"]


def test_at_all_and_no_mentions_do_not_mention_the_bot(sim_app: SimApp) -> None:
    everyone = {"key": "@_all", "id": {"user_id": "all"}, "name": "所有人"}
    at_all = message(payloads.text_message(sim_app, "@_all lunch", chat_type="group", mentions=[everyone]))
    plain = message(payloads.text_message(sim_app, "hello"))
    assert not at_all.mentions_bot() and not plain.mentions_bot() and not plain.is_group
    assert at_all.text_without_mentions == "lunch"


def test_official_sample_mentions_are_typed(samples_dir: pathlib.Path) -> None:
    event = message(json.loads((samples_dir / "im.message.receive_v1.json").read_text("utf-8")))
    [tom] = event.mention_list
    assert tom == Mention(
        "@_user_1",
        "Tom",
        "ou_84aad35d084aa403a838cf73ee18467",
        "e33ggbyz",
        "on_8ed6aa67826108097d9ee143816345",
        "736588c9260f175e",
    )
    assert event.mentions_bot("ou_84aad35d084aa403a838cf73ee18467")
    assert event.text_without_mentions == "hello"


def test_mention_placeholders_are_replaced_or_stripped() -> None:
    mentions = [Mention("@_user_1", "Tom", "ou_t"), Mention("@_user_2", "Ann", "ou_a")]
    text = "@_user_1 and @_user_2, and @_user_3;  @_all"
    assert replace_mentions(text, mentions) == "@Tom and @Ann, and @_user_3;  @all"
    assert replace_mentions("@_user_1", mentions, template="<at id={open_id}></at>") == "<at id=ou_t></at>"
    assert strip_mentions(text) == "and , and ;"
    assert strip_mentions("@_user_1   hi  there @_user_2") == "hi there"
    assert strip_mentions("@_user_10 x") == "x"


# -- contents ----------------------------------------------------------------------------------------------


def test_text_image_file_and_card_contents_are_typed(sim_app: SimApp) -> None:
    assert message(payloads.text_message(sim_app, "hi")).body == ReceivedText("hi")
    assert with_content(sim_app, "image", {"image_key": "img_v2_1"}).body == ReceivedImage("img_v2_1")
    file = with_content(sim_app, "file", {"file_key": "file_v2_1", "file_name": "a.pdf"}).body
    assert file == ReceivedFile("file_v2_1", "a.pdf") and file.msg_type == "file"
    card = {"title": "t", "elements": [[{"tag": "text", "text": "x"}]]}
    assert with_content(sim_app, "interactive", card).body == ReceivedCard(card)
    sticker = with_content(sim_app, "sticker", {"file_key": "s1"}).body
    assert sticker == ReceivedOther("sticker", {"file_key": "s1"})


def test_received_post_becomes_plain_text_and_structure(sim_app: SimApp) -> None:
    post = {
        "title": "Weekly",
        "content": [
            [
                {"tag": "at", "user_id": "@_user_1", "user_name": "wslarkbot"},
                {"tag": "text", "text": " see "},
                {"tag": "a", "href": "https://example.com", "text": "the doc"},
            ],
            [{"tag": "img", "image_key": "img_v2_9"}],
            [{"tag": "code_block", "language": "PYTHON", "text": "print(1)"}],
        ],
    }
    body = with_content(sim_app, "post", post).body
    assert isinstance(body, ReceivedPost)
    assert body.title == "Weekly" and len(body.paragraphs) == 3
    assert body.text == "Weekly\n@wslarkbot see the doc\n\nprint(1)"
    assert body.image_keys == ["img_v2_9"]


def test_post_wrapped_in_a_locale_is_unwrapped() -> None:
    body = parse_content("post", {"zh_cn": {"title": "标题", "content": [[{"tag": "text", "text": "正文"}]]}})
    assert isinstance(body, ReceivedPost) and body.text == "标题\n正文"


@pytest.mark.parametrize(
    "message_type, data", [("image", {}), ("file", {"file_name": "x"}), ("text", {}), (None, {"a": 1})]
)
def test_contents_missing_their_fields_fall_back_to_other_content(
    message_type: str | None, data: dict[str, Any]
) -> None:
    assert isinstance(parse_content(message_type, data), ReceivedOther)
