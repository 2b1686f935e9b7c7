"""The OpenAPI helpers (files, resources, messages, reactions, chats, users, urgent, pagination), each
through the fake OpenAPI over real HTTP, with the blocking and the asyncio client (issue 20)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from wslarkbot.exceptions import ConfigurationError, FeishuAPIError
from wslarkbot.openapi import AsyncOpenAPIClient, OpenAPIClient
from wslarkbot.openapi.base import BaseOpenAPIClient
from wslarkbot.openapi.core import HTTPRequest
from wslarkbot.sim.openapi_server import FakeOpenAPI

APP_ID, SECRET = "cli_helpers", "s3cret"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def api() -> Iterator[FakeOpenAPI]:
    with FakeOpenAPI() as fake:
        fake.add_app(APP_ID, SECRET, tenant_key="tk_one")
        fake.add_app("cli_other", "x")
        yield fake


class Both:
    """Runs one call on the sync or the async client, so each test covers both."""

    def __init__(self, sync: OpenAPIClient | None, aio: AsyncOpenAPIClient | None) -> None:
        self.sync, self.aio = sync, aio

    async def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.sync is not None:
            return getattr(self.sync, name)(*args, **kwargs)
        assert self.aio is not None
        return await getattr(self.aio, name)(*args, **kwargs)

    async def all(self, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """A paginated helper's items, listed."""
        if self.sync is not None:
            return list(getattr(self.sync, name)(*args, **kwargs))
        assert self.aio is not None
        return [item async for item in getattr(self.aio, name)(*args, **kwargs)]


@pytest.fixture(params=["sync", "async"])
async def call(request: pytest.FixtureRequest, api: FakeOpenAPI) -> AsyncIterator[Both]:
    if request.param == "sync":
        with OpenAPIClient(APP_ID, SECRET, api.url) as client:
            yield Both(client, None)
    else:
        async with AsyncOpenAPIClient(APP_ID, SECRET, api.url) as aclient:
            yield Both(None, aclient)


def _sent_by_other_app(api: FakeOpenAPI) -> str:
    with OpenAPIClient("cli_other", "x", api.url) as other:
        return str(other.send_text("ou_1", "theirs")["message_id"])


# -- files ------------------------------------------------------------------------------------------


async def test_an_uploaded_image_can_be_sent_and_downloaded_again(
    call: Both, api: FakeOpenAPI, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    key = (await call("upload_image", path))["image_key"]
    (upload,) = api.calls_to("/im/v1/images")
    assert upload.headers["content-type"].startswith("multipart/form-data")
    sent = await call("send", "ou_1", {"image_key": key}, "image")
    got = await call("download_resource", sent["message_id"], key, "image")
    assert (got.content, got.content_type, got.filename) == (PNG, "image/png", "cat.png")


async def test_a_file_is_streamed_to_a_path(call: Both, api: FakeOpenAPI, tmp_path: pathlib.Path) -> None:
    data = b"%PDF-1.7 " + bytes(range(256)) * 300
    key = (await call("upload_file", data, "pdf", "report.pdf"))["file_key"]
    assert api.extras.uploads[key].filename == "report.pdf"
    sent = await call("send", "oc_1", {"file_key": key}, "file", "chat_id")
    target = tmp_path / "out.pdf"
    got = await call("download_resource", sent["message_id"], key, "file", path=target)
    assert got.path == str(target) and got.content == b"" and target.read_bytes() == data
    assert got.filename == "report.pdf"


async def test_a_resource_not_in_the_message_is_a_feishu_error_and_nothing_is_written(
    call: Both, api: FakeOpenAPI, tmp_path: pathlib.Path
) -> None:
    key = (await call("upload_image", PNG))["image_key"]
    sent = await call("send_text", "ou_1", "no image here")
    target = tmp_path / "x.png"
    with pytest.raises(FeishuAPIError) as err:
        await call("download_resource", sent["message_id"], key, path=target)
    assert err.value.code == 234003 and not target.exists()


async def test_uploads_feishu_refuses_are_refused_before_sending(call: Both, api: FakeOpenAPI) -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        await call("upload_file", b"", "stream", "empty.bin")
    with pytest.raises(ConfigurationError, match="file_type"):
        await call("upload_file", b"x", "exe", "a.exe")
    with pytest.raises(ConfigurationError, match="10485760"):
        await call("upload_image", b"\x89PNG" + b"\0" * (10 * 1024 * 1024))
    assert api.calls_to("/im/v1/") == []


async def test_request_sends_multipart_files_with_form_fields(call: Both, api: FakeOpenAPI) -> None:
    answer = await call(
        "request",
        "POST",
        "/open-apis/im/v1/files",
        data={"file_type": "stream", "file_name": "notes.txt"},
        files={"file": b"hello"},
    )
    assert api.extras.uploads[answer["file_key"]].content == b"hello"


async def test_the_fake_refuses_an_upload_without_its_fields(call: Both) -> None:
    with pytest.raises(FeishuAPIError) as err:
        await call("request", "POST", "/open-apis/im/v1/files", data={}, files={"file": b"x"})
    assert "file_type" in err.value.msg


# -- messages ---------------------------------------------------------------------------------------


async def test_get_message_recall_and_forward(call: Both, api: FakeOpenAPI) -> None:
    sent = await call("send_text", "ou_1", "hello")
    message_id = sent["message_id"]
    got = await call("get_message", message_id)
    assert got["items"][0]["message_id"] == message_id
    forwarded = await call("forward", message_id, "oc_2", "chat_id")
    assert forwarded["message_id"] != message_id and forwarded["chat_id"]
    await call("recall", message_id)
    assert message_id in api.extras.recalled
    with pytest.raises(FeishuAPIError):
        await call("recall", message_id)
    with pytest.raises(FeishuAPIError) as err:
        await call("recall", _sent_by_other_app(api))
    assert err.value.code == 230026


async def test_reactions_are_added_listed_page_by_page_and_removed(call: Both, api: FakeOpenAPI) -> None:
    message_id = (await call("send_text", "ou_1", "react to me"))["message_id"]
    ids = [(await call("add_reaction", message_id, emoji))["reaction_id"] for emoji in ["OK", "SMILE", "OK"]]
    listed = await call.all("list_reactions", message_id, page_size=2)
    assert [r["reaction_id"] for r in listed] == ids
    assert len(api.calls_to("/reactions", "GET")) == 2  # two pages of two
    oks = await call.all("list_reactions", message_id, "OK")
    assert [r["reaction_id"] for r in oks] == [ids[0], ids[2]]
    await call("remove_reaction", message_id, ids[1])
    assert [r["reaction_id"] for r in await call.all("list_reactions", message_id)] == [ids[0], ids[2]]
    with pytest.raises(FeishuAPIError):
        await call("add_reaction", message_id, "NOT_AN_EMOJI")


async def test_urgent_buzzes_users_and_names_the_unknown_ones(call: Both, api: FakeOpenAPI) -> None:
    api.add_user({"open_id": "ou_a", "user_id": "u_a", "union_id": "on_a", "name": "Ann"})
    message_id = (await call("send_text", "ou_a", "look"))["message_id"]
    answer = await call("urgent", message_id, ["ou_a", "ou_ghost"], "phone")
    assert answer["invalid_user_id_list"] == ["ou_ghost"]
    assert api.extras.urgent == [(message_id, "phone", ["ou_a", "ou_ghost"])]
    with pytest.raises(ConfigurationError):
        await call("urgent", message_id, [], "app")


# -- chats and users --------------------------------------------------------------------------------


async def test_chat_info_and_every_member_across_pages(call: Both, api: FakeOpenAPI) -> None:
    members = [
        {"open_id": f"ou_{i}", "user_id": f"u_{i}", "name": f"M{i}", "tenant_key": "tk_one"} for i in range(7)
    ]
    api.add_chat("oc_team", {"name": "Team", "chat_mode": "group"}, members)
    info = await call("chat_info", "oc_team")
    assert info["name"] == "Team"
    listed = await call.all("chat_members", "oc_team", "user_id", page_size=3)
    assert [m["member_id"] for m in listed] == [f"u_{i}" for i in range(7)]
    assert len(api.calls_to("/members")) == 3


async def test_user_info_by_each_id_type(call: Both, api: FakeOpenAPI) -> None:
    api.add_user({"open_id": "ou_b", "user_id": "u_b", "union_id": "on_b", "name": "Bo"})
    assert (await call("user_info", "ou_b"))["user"]["name"] == "Bo"
    assert (await call("user_info", "u_b", "user_id"))["user"]["open_id"] == "ou_b"
    with pytest.raises(FeishuAPIError):
        await call("user_info", "ou_nobody")
    with pytest.raises(ConfigurationError):
        await call("user_info", "x", "email")


async def test_paginate_follows_page_tokens_of_any_list(call: Both, api: FakeOpenAPI) -> None:
    members = [{"open_id": f"ou_{i}", "name": f"M{i}", "tenant_key": "t"} for i in range(5)]
    api.add_chat("oc_p", {"name": "P"}, members)
    got = await call.all("paginate", "GET", "/open-apis/im/v1/chats/oc_p/members", page_size=2)
    assert [m["member_id"] for m in got] == [f"ou_{i}" for i in range(5)]
    tokens = [c.query.get("page_token") for c in api.calls_to("/members")]
    assert tokens == [None, "2", "4"]


def test_helpers_check_their_arguments() -> None:
    from wslarkbot.openapi import calls

    bad: list[Callable[[], Any]] = [
        lambda: calls.download_resource("om_1", "k", "video"),
        lambda: calls.forward("om_1", "oc_1", "phone"),
        lambda: calls.chat_members("oc_1", "email"),
        lambda: calls.get_message(""),
        lambda: calls.add_reaction("om_1", ""),
        lambda: calls.page_params(None, None, 500),
    ]
    for make in bad:
        with pytest.raises(ConfigurationError):
            make()
    assert calls.get_message("om/../x").path.endswith("/om%2F..%2Fx")


def test_lark_client_reaches_the_rest_of_the_platform_with_the_bots_credentials(api: FakeOpenAPI) -> None:
    from lark_oapi.api.im.v1 import CreateMessageRequest, CreateMessageRequestBody

    from wslarkbot import Bot

    app_id = "cli_lark_bridge"  # lark-oapi caches tokens per app id process-wide: one of its own
    api.add_app(app_id, "bridge-secret")
    bot = Bot(app_id, "bridge-secret", host=api.url)
    body = CreateMessageRequestBody.builder().receive_id("ou_1").msg_type("text").content('{"text":"hi"}')
    request = CreateMessageRequest.builder().receive_id_type("open_id").request_body(body.build()).build()
    response = bot.lark_client().im.v1.message.create(request)
    assert response.success(), response.msg
    (call,) = api.calls_to("/open-apis/im/v1/messages", "POST")
    assert call.app_id == app_id and call.json["content"] == '{"text":"hi"}'


CARD_V2 = {"schema": "2.0", "body": {"elements": []}}


class RecordingClient(BaseOpenAPIClient[Any, Any, Any, Any]):
    """The helpers' requests, returned instead of performed."""

    def _call(self, request: HTTPRequest) -> HTTPRequest:
        return request

    def _download(self, request: HTTPRequest) -> HTTPRequest:
        return request

    def _pages(self, request: HTTPRequest, page_size: int, items: str) -> HTTPRequest:
        return request

    def tenant_access_token(self) -> str:
        return ""


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda c: c.upload_image(PNG), "im.v1.CreateImageRequest"),
        (lambda c: c.upload_file(b"x", "pdf", "a.pdf"), "im.v1.CreateFileRequest"),
        (lambda c: c.download_resource("om_1", "img_1"), "im.v1.GetMessageResourceRequest"),
        (lambda c: c.get_message("om_1"), "im.v1.GetMessageRequest"),
        (lambda c: c.recall("om_1"), "im.v1.DeleteMessageRequest"),
        (lambda c: c.forward("om_1", "oc_1", "chat_id"), "im.v1.ForwardMessageRequest"),
        (lambda c: c.add_reaction("om_1", "OK"), "im.v1.CreateMessageReactionRequest"),
        (lambda c: c.remove_reaction("om_1", "r_1"), "im.v1.DeleteMessageReactionRequest"),
        (lambda c: c.list_reactions("om_1"), "im.v1.ListMessageReactionRequest"),
        (lambda c: c.chat_info("oc_1"), "im.v1.GetChatRequest"),
        (lambda c: c.chat_members("oc_1"), "im.v1.GetChatMembersRequest"),
        (lambda c: c.user_info("ou_1"), "contact.v3.GetUserRequest"),
        (lambda c: c.urgent("om_1", ["ou_1"], "app"), "im.v1.UrgentAppMessageRequest"),
        (lambda c: c.urgent("om_1", ["ou_1"], "sms"), "im.v1.UrgentSmsMessageRequest"),
        (lambda c: c.urgent("om_1", ["ou_1"], "phone"), "im.v1.UrgentPhoneMessageRequest"),
        (lambda c: c.create_card(CARD_V2), "cardkit.v1.CreateCardRequest"),
        (lambda c: c.update_card_entity("c_1", CARD_V2, 1), "cardkit.v1.UpdateCardRequest"),
        (lambda c: c.stream_card_text("c_1", "e_1", "t", 1), "cardkit.v1.ContentCardElementRequest"),
        (lambda c: c.update_card_settings("c_1", {"config": {}}, 1), "cardkit.v1.SettingsCardRequest"),
    ],
)
def test_each_helper_calls_the_endpoint_of_the_official_sdk(ours: Callable[[Any], Any], theirs: str) -> None:
    """Method and path template of each helper, checked against lark-oapi's request class of that call."""
    request = ours(RecordingClient())
    assert isinstance(request, HTTPRequest)
    import importlib
    import re

    module, name = theirs.rsplit(".", 1)
    official = getattr(importlib.import_module(f"lark_oapi.api.{module}"), name).builder().build()
    pattern = re.sub(r":\w+", "[^/]+", official.uri) + r"\Z"
    assert request.method == official.http_method.name and re.match(pattern, request.path), (
        request,
        official.uri,
    )
