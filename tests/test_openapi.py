"""OpenAPIClient / AsyncOpenAPIClient against FakeOpenAPI over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from fake_clock import Clock, clock_fixture  # noqa: F401  (registers `clock`)
from wslarkbot.exceptions import ConfigurationError, FeishuAPIError, RateLimitedError
from wslarkbot.openapi import AsyncOpenAPIClient, OpenAPIClient
from wslarkbot.openapi.core import HTTPResponse, content_to_string, interpret
from wslarkbot.sim.openapi_server import FakeOpenAPI

APP_ID, SECRET = "cli_test_app", "s3cret"
TOKEN = "tenant_access_token"
MESSAGES = "/open-apis/im/v1/messages"


@pytest.fixture
def api(clock: Clock) -> Iterator[FakeOpenAPI]:
    with FakeOpenAPI(clock=clock) as fake:
        fake.add_app(APP_ID, SECRET)
        yield fake


@pytest.fixture
def client(api: FakeOpenAPI, clock: Clock) -> Iterator[OpenAPIClient]:
    with OpenAPIClient(APP_ID, SECRET, api.url, clock=clock) as c:
        yield c


def load(samples_dir: pathlib.Path, name: str) -> Any:
    return json.loads((samples_dir / name).read_text(encoding="utf-8"))


# -- token ------------------------------------------------------------------------------------------


def test_token_is_fetched_once_and_cached_across_calls(api: FakeOpenAPI, client: OpenAPIClient) -> None:
    client.send_text("ou_1", "a")
    client.reply_text("om_1", "b")
    assert client.tenant_access_token().startswith("t-")
    assert len(api.calls_to(TOKEN)) == 1
    assert [c.token_seq for c in api.calls_to(MESSAGES)] == [1, 1]
    assert api.calls_to(TOKEN)[0].json == {"app_id": APP_ID, "app_secret": SECRET}


def test_concurrent_first_calls_in_threads_fetch_the_token_once(
    api: FakeOpenAPI, client: OpenAPIClient
) -> None:
    api.pause(TOKEN)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client.send_text, f"ou_{i}", "hi") for i in range(8)]
        api.wait_for_calls(TOKEN, answered=False)
        with pytest.raises(TimeoutError):  # while the first fetch is held, nobody else fetches
            api.wait_for_calls(TOKEN, count=2, timeout=0.3, answered=False)
        api.resume()
        assert all(f.result(timeout=5)["message_id"].startswith("om_") for f in futures)
    assert len(api.calls_to(TOKEN)) == 1
    assert len(api.calls_to(MESSAGES)) == 8


async def test_concurrent_first_calls_with_gather_fetch_the_token_once(
    api: FakeOpenAPI, clock: Clock
) -> None:
    api.pause(TOKEN)
    async with AsyncOpenAPIClient(APP_ID, SECRET, api.url, clock=clock) as aclient:
        calls = asyncio.gather(*(aclient.send_text(f"ou_{i}", "hi") for i in range(8)))
        task = asyncio.ensure_future(calls)
        await asyncio.to_thread(api.wait_for_calls, TOKEN, answered=False)
        with pytest.raises(TimeoutError):
            await asyncio.to_thread(api.wait_for_calls, TOKEN, count=2, timeout=0.3, answered=False)
        api.resume()
        results = await asyncio.wait_for(task, 5)
    assert len({r["message_id"] for r in results}) == 8
    assert len(api.calls_to(TOKEN)) == 1


def test_token_is_kept_until_ten_minutes_before_expiry_then_refreshed(
    api: FakeOpenAPI, client: OpenAPIClient, clock: Clock
) -> None:
    client.send_text("ou_1", "a")
    clock.now += 7200 - 600 - 1  # 601 s left: still fresh
    client.send_text("ou_1", "b")
    assert len(api.calls_to(TOKEN)) == 1
    clock.now += 2  # 599 s left: refresh (Feishu issues a new token under 30 min)
    client.send_text("ou_1", "c")
    assert len(api.calls_to(TOKEN)) == 2
    assert [c.token_seq for c in api.calls_to(MESSAGES)] == [1, 1, 2]


def test_token_reported_invalid_is_refreshed_once_and_the_call_retried(
    api: FakeOpenAPI, client: OpenAPIClient
) -> None:
    client.send_text("ou_1", "warm up")
    api.inject_token_invalid(count=1)
    result = client.send_text("ou_1", "again")
    assert result["message_id"].startswith("om_")
    assert len(api.calls_to(TOKEN)) == 2
    assert [c.code for c in api.calls_to(MESSAGES)] == [0, 99991663, 0]
    assert api.calls_to(MESSAGES)[-1].token_seq == 2


def test_token_still_invalid_after_one_refresh_raises(api: FakeOpenAPI, client: OpenAPIClient) -> None:
    api.inject_token_invalid(count=2)
    with pytest.raises(FeishuAPIError) as info:
        client.send_text("ou_1", "x")
    assert info.value.code == 99991663
    assert len(api.calls_to(MESSAGES)) == 2  # one retry only


async def test_async_client_refreshes_invalid_token_once(api: FakeOpenAPI, clock: Clock) -> None:
    api.inject_token_invalid(count=1)
    async with AsyncOpenAPIClient(APP_ID, SECRET, api.url, clock=clock) as aclient:
        result = await aclient.reply_text("om_parent", "pong")
    assert result["parent_id"] == "om_parent"
    assert len(api.calls_to(TOKEN)) == 2


def test_wrong_secret_raises_feishu_api_error(api: FakeOpenAPI) -> None:
    with OpenAPIClient(APP_ID, "wrong", api.url) as bad, pytest.raises(FeishuAPIError) as info:
        bad.send_text("ou_1", "x")
    assert info.value.code == 10014
    assert api.calls_to(MESSAGES) == []


# -- rate limits and errors -------------------------------------------------------------------------


def test_rate_limit_is_waited_out_then_the_call_succeeds(api: FakeOpenAPI, client: OpenAPIClient) -> None:
    api.inject_rate_limit(count=2, reset=0.05, path_contains=MESSAGES)
    assert client.send_text("ou_1", "x")["message_id"].startswith("om_")
    assert [c.status for c in api.calls_to(MESSAGES)] == [429, 429, 200]


async def test_async_rate_limit_beyond_max_retries_raises_rate_limited_error(
    api: FakeOpenAPI, clock: Clock
) -> None:
    api.inject_rate_limit(count=10, reset=0.05, path_contains=MESSAGES)
    async with AsyncOpenAPIClient(APP_ID, SECRET, api.url, clock=clock, max_retries=2) as aclient:
        with pytest.raises(RateLimitedError) as info:
            await aclient.send_text("ou_1", "x")
    assert (info.value.code, info.value.http_status, info.value.retry_after) == (99991400, 429, 0.05)
    assert len(api.calls_to(MESSAGES)) == 3


def test_business_error_raises_feishu_api_error_with_code_msg_and_log_id(
    api: FakeOpenAPI, client: OpenAPIClient
) -> None:
    api.inject_error(230002, "Bot/User can NOT be out of the chat.", path_contains="/reply")
    with pytest.raises(FeishuAPIError) as info:
        client.reply_text("om_1", "x")
    err = info.value
    assert (err.code, err.msg, err.http_status) == (230002, "Bot/User can NOT be out of the chat.", 400)
    assert err.log_id and err.log_id == err.body["error"]["log_id"]


def test_non_json_answer_raises_code_minus_one_with_http_status(client: OpenAPIClient) -> None:
    with pytest.raises(FeishuAPIError) as info:
        client.request("GET", "/open-apis/no/such/api")
    assert (info.value.code, info.value.http_status) == (-1, 404)
    assert info.value.log_id


def test_network_errors_propagate_as_httpx_errors() -> None:
    with FakeOpenAPI() as gone:
        url = gone.url
    with OpenAPIClient(APP_ID, SECRET, url, timeout=2) as c, pytest.raises(httpx.TransportError):
        c.send_text("ou_1", "x")


# -- request shapes ---------------------------------------------------------------------------------


def test_send_matches_the_documented_request_and_returns_data(
    api: FakeOpenAPI, client: OpenAPIClient, samples_dir: pathlib.Path
) -> None:
    sample = load(samples_dir, "openapi.im.message.create.request.json")
    result = client.send(sample["receive_id"], {"text": "test content"}, receive_id_type="chat_id")
    [call] = api.calls_to(MESSAGES)
    assert (call.method, call.query, call.json) == ("POST", {"receive_id_type": "chat_id"}, sample)
    assert call.headers["authorization"] == "Bearer ***"
    assert result["chat_id"] == sample["receive_id"]
    assert result.status_code == 200
    assert result.json()["data"]["message_id"] == result["message_id"]
    response_keys = set(load(samples_dir, "openapi.im.message.create.response.json")["data"])
    assert set(result) <= response_keys


def test_reply_in_thread_matches_the_documented_request(
    api: FakeOpenAPI, client: OpenAPIClient, samples_dir: pathlib.Path
) -> None:
    sample = load(samples_dir, "openapi.im.message.reply.request.json")
    content = json.loads(sample["content"])
    result = client.reply("om_parent", content, reply_in_thread=True, uuid=sample["uuid"])
    [call] = api.calls_to("/reply")
    assert call.path == "/open-apis/im/v1/messages/om_parent/reply"
    assert call.json == sample
    assert result["thread_id"].startswith("omt_")


def test_update_card_patches_the_card_as_a_json_string(api: FakeOpenAPI, client: OpenAPIClient) -> None:
    card = {"elements": [{"tag": "div", "text": {"tag": "plain_text", "content": "v1"}}]}
    message_id = client.send_card("ou_1", card)["message_id"]
    card2 = {"elements": [{"tag": "div", "text": {"tag": "plain_text", "content": "v2"}}]}
    assert client.update_card(message_id, card2) == {}
    [call] = api.calls_to(MESSAGES, method="PATCH")
    assert call.path == f"{MESSAGES}/{message_id}"
    assert json.loads(call.json["content"]) == card2 and set(call.json) == {"content"}
    assert api.messages[message_id].content == card2
    assert len(api.messages[message_id].contents) == 2


def test_delay_update_card_posts_token_and_card_object(api: FakeOpenAPI, client: OpenAPIClient) -> None:
    token = api.issue_card_token(APP_ID)
    card = {"elements": [{"tag": "hr"}]}
    client.delay_update_card(token, card)
    [call] = api.calls_to("/interactive/v1/card/update")
    assert call.json == {"token": token, "card": card}


def test_msg_type_comes_from_the_content_object_when_not_given(
    api: FakeOpenAPI, client: OpenAPIClient
) -> None:
    from wslarkbot.cards import FeishuMessageCard, FeishuMessageDiv

    card = FeishuMessageCard(FeishuMessageDiv("hello"), header="Title")
    client.send("oc_1", card, receive_id_type="chat_id")
    [call] = api.calls_to(MESSAGES)
    assert call.json["msg_type"] == "interactive"
    assert json.loads(call.json["content"]) == card.to_dict()


async def test_async_client_sends_cards_and_reads_its_token(api: FakeOpenAPI, clock: Clock) -> None:
    async with AsyncOpenAPIClient(APP_ID, SECRET, api.url, clock=clock) as aclient:
        token = await aclient.tenant_access_token()
        sent = await aclient.send_card("oc_1", {"elements": []}, receive_id_type="chat_id")
        await aclient.update(sent["message_id"], {"elements": [{"tag": "hr"}]})
    assert token.startswith("t-")
    assert [c.method for c in api.calls_to(MESSAGES)] == ["POST", "PATCH"]


# -- the core without sockets -----------------------------------------------------------------------


def test_content_strings_must_be_json_objects() -> None:
    assert content_to_string('{"text":"hi"}') == '{"text":"hi"}'
    with pytest.raises(ConfigurationError):
        content_to_string("plain text")
    with pytest.raises(ConfigurationError):
        content_to_string(42)


def test_interpret_reads_log_id_from_the_error_object_without_header() -> None:
    body = b'{"code":230001,"msg":"bad","error":{"log_id":"L1"}}'
    with pytest.raises(FeishuAPIError) as info:
        interpret(HTTPResponse(400, {}, body))
    assert (info.value.code, info.value.log_id) == (230001, "L1")


def test_rate_limit_reset_is_capped() -> None:
    with pytest.raises(RateLimitedError) as info:
        interpret(HTTPResponse(429, {"x-ogw-ratelimit-reset": "3600"}, b"{}"))
    assert info.value.retry_after == 10.0


def test_invalid_arguments_raise_configuration_error(client: OpenAPIClient) -> None:
    with pytest.raises(ConfigurationError):
        client.send_text("ou_1", "x", receive_id_type="phone")
    with pytest.raises(ConfigurationError):
        client.send_text("ou_1", "x", uuid="u" * 51)
    with pytest.raises(ConfigurationError):
        OpenAPIClient("", "")
