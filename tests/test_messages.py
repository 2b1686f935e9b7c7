"""Message content builders produce Feishu's documented content JSON and msg_type."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from wslarkbot.exceptions import CardValidationError
from wslarkbot.messages import (
    MAX_TEXT_BYTES,
    AudioContent,
    FeishuTextMessage,
    FileContent,
    ImageContent,
    MediaContent,
    MessageContent,
    PostAt,
    PostCodeBlock,
    PostContent,
    PostEmotion,
    PostHr,
    PostImage,
    PostLink,
    PostMarkdown,
    PostMedia,
    PostText,
    ShareChatContent,
    ShareUserContent,
    StickerContent,
    TextContent,
    mention,
    mention_all,
)


def test_text_with_mentions() -> None:
    text = TextContent(f"hi {mention('ou_1', 'Tom')} and {mention_all()}")
    assert text.to_dict() == {"text": 'hi <at user_id="ou_1">Tom</at> and <at user_id="all">所有人</at>'}
    assert text.msg_type == "text"
    assert FeishuTextMessage is TextContent


@pytest.mark.parametrize(
    "content, msg_type, expected",
    [
        (ImageContent("img_1"), "image", {"image_key": "img_1"}),
        (FileContent("file_1"), "file", {"file_key": "file_1"}),
        (AudioContent("file_a"), "audio", {"file_key": "file_a"}),
        (StickerContent("file_s"), "sticker", {"file_key": "file_s"}),
        (MediaContent("file_m", "img_c"), "media", {"file_key": "file_m", "image_key": "img_c"}),
        (ShareChatContent("oc_1"), "share_chat", {"chat_id": "oc_1"}),
        (ShareUserContent("ou_1"), "share_user", {"user_id": "ou_1"}),
    ],
)
def test_simple_contents_have_documented_shape_and_msg_type(
    content: MessageContent, msg_type: str, expected: dict[str, Any]
) -> None:
    assert content.msg_type == msg_type
    assert content.to_dict() == expected
    assert json.loads(json.dumps(content)) == expected


def test_post_with_every_tag_and_two_languages() -> None:
    post = PostContent(
        "标题",
        [PostText("bold ", style=["bold"]), PostLink("link", "https://x.y"), PostAt("ou_1"), "plain"],
        PostImage("img_1"),
        [PostMedia("file_1", "img_2"), PostEmotion("SMILE")],
        PostHr(),
        PostCodeBlock("print(1)", language="python"),
        PostMarkdown("**md**"),
    ).add_language("en_us", "Title", ["hello"])
    assert post.msg_type == "post"
    assert post.to_dict() == {
        "zh_cn": {
            "title": "标题",
            "content": [
                [
                    {"tag": "text", "text": "bold ", "style": ["bold"]},
                    {"tag": "a", "text": "link", "href": "https://x.y"},
                    {"tag": "at", "user_id": "ou_1"},
                    {"tag": "text", "text": "plain"},
                ],
                [{"tag": "img", "image_key": "img_1"}],
                [
                    {"tag": "media", "file_key": "file_1", "image_key": "img_2"},
                    {"tag": "emotion", "emoji_type": "SMILE"},
                ],
                [{"tag": "hr"}],
                [{"tag": "code_block", "language": "python", "text": "print(1)"}],
                [{"tag": "md", "text": "**md**"}],
            ],
        },
        "en_us": {"title": "Title", "content": [[{"tag": "text", "text": "hello"}]]},
    }


@pytest.mark.parametrize(
    "build",
    [
        lambda: ImageContent(""),
        lambda: PostContent(""),
        lambda: PostContent("t", lang="chinese"),
        lambda: PostContent("t", [{"tag": "table"}]),
        lambda: PostText("x", style=["blink"]),
        lambda: PostLink("x", ""),
        lambda: TextContent(42),  # type: ignore[arg-type]
    ],
)
def test_invalid_message_input_raises_card_validation_error(build: Callable[[], object]) -> None:
    with pytest.raises(CardValidationError):
        build()


def test_text_over_150_kb_is_rejected_at_to_dict() -> None:
    wrapper = len('{"text":""}')
    TextContent("x" * (MAX_TEXT_BYTES - wrapper)).to_dict()  # exactly at the limit
    with pytest.raises(CardValidationError):
        TextContent("x" * (MAX_TEXT_BYTES - wrapper + 1)).to_dict()
