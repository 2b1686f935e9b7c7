"""FakeOpenAPI behaves as protocol.md §8/§11 says Feishu does, seen through raw HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fake_clock import Clock, clock_fixture  # noqa: F401  (registers `clock`)
from wslarkbot.sim.openapi_server import FakeOpenAPI

APP_ID, SECRET = "cli_fake", "secret"
TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
MESSAGES = "/open-apis/im/v1/messages"
CARD = json.dumps({"elements": [{"tag": "hr"}]})


@pytest.fixture
def api(clock: Clock) -> Iterator[FakeOpenAPI]:
    with FakeOpenAPI(clock=clock, app_rate_limit=1000) as fake:
        fake.add_app(APP_ID, SECRET)
        yield fake


@pytest.fixture
def http(api: FakeOpenAPI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=5) as client:
        yield client


def token(http: httpx.Client, secret: str = SECRET) -> httpx.Response:
    return http.post(TOKEN_PATH, json={"app_id": APP_ID, "app_secret": secret})


def auth(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def send(
    http: httpx.Client, tok: str, msg_type: str = "text", content: str = '{"text":"hi"}', **extra: Any
) -> httpx.Response:
    body = {"receive_id": "ou_1", "msg_type": msg_type, "content": content, **extra}
    return http.post(MESSAGES, params={"receive_id_type": "open_id"}, json=body, headers=auth(tok))


def test_token_lasts_7200_s_and_is_reissued_only_under_30_minutes(http: httpx.Client, clock: Clock) -> None:
    first = token(http).json()
    assert first["code"] == 0 and first["expire"] == 7200 and first["tenant_access_token"].startswith("t-")
    clock.now += 3600
    again = token(http).json()
    assert again["tenant_access_token"] == first["tenant_access_token"] and again["expire"] == 3600
    clock.now += 1801  # 1799 s left
    fresh = token(http).json()
    assert fresh["tenant_access_token"] != first["tenant_access_token"] and fresh["expire"] == 7200
    assert send(http, first["tenant_access_token"]).json()["code"] == 0  # the old one stays valid
    clock.now += 1800
    assert send(http, first["tenant_access_token"]).json()["code"] == 99991663  # now expired


def test_wrong_secret_and_unknown_app_are_refused(http: httpx.Client) -> None:
    wrong = token(http, "nope")
    assert (wrong.status_code, wrong.json()["code"]) == (400, 10014)
    unknown = http.post(TOKEN_PATH, json={"app_id": "cli_other", "app_secret": SECRET})
    assert unknown.json()["code"] == 10003


def test_bearer_token_is_required(http: httpx.Client) -> None:
    missing = http.post(MESSAGES, params={"receive_id_type": "open_id"}, json={})
    assert missing.json()["code"] == 99991661
    assert send(http, "t-unknown").json()["code"] == 99991663
    assert send(http, "bogus").json()["code"] == 99991671


def test_every_response_carries_x_tt_logid_and_errors_repeat_it(http: httpx.Client) -> None:
    responses = [token(http), send(http, "t-unknown"), http.get("/open-apis/nowhere")]
    assert all(r.headers.get("x-tt-logid") for r in responses)
    assert responses[1].json()["error"]["log_id"] == responses[1].headers["x-tt-logid"]
    assert (responses[2].status_code, responses[2].text) == (404, "404 page not found")


def test_create_requires_receive_id_type_and_answers_the_documented_shape(
    http: httpx.Client, api: FakeOpenAPI
) -> None:
    tok = token(http).json()["tenant_access_token"]
    body = {"receive_id": "ou_1", "msg_type": "text", "content": '{"text":"hi"}'}
    bad = http.post(MESSAGES, json=body, headers=auth(tok))
    assert (bad.status_code, bad.json()["code"]) == (400, 99992402)
    data = send(http, tok).json()["data"]
    assert {"message_id", "msg_type", "chat_id", "create_time", "sender", "body"} <= set(data)
    assert data["sender"] == {
        "id": APP_ID,
        "id_type": "app_id",
        "sender_type": "app",
        "tenant_key": "736588c9260f175e",
    }
    assert api.messages[data["message_id"]].content == {"text": "hi"}


def test_content_must_be_a_json_object_string_within_size_limits(http: httpx.Client) -> None:
    tok = token(http).json()["tenant_access_token"]
    assert send(http, tok, content="hi").json()["code"] == 230001
    big = json.dumps({"elements": [{"tag": "markdown", "content": "x" * 31_000}]})
    assert send(http, tok, "interactive", big).json()["code"] == 230025


def test_same_uuid_returns_the_same_message_within_an_hour(
    http: httpx.Client, api: FakeOpenAPI, clock: Clock
) -> None:
    tok = token(http).json()["tenant_access_token"]
    a = send(http, tok, uuid="u-1").json()["data"]["message_id"]
    b = send(http, tok, uuid="u-1").json()["data"]["message_id"]
    clock.now += 3601
    c = send(http, tok, uuid="u-1").json()["data"]["message_id"]
    assert a == b != c
    assert len(api.messages) == 2


def test_reply_in_thread_creates_a_thread_and_later_replies_stay_in_it(http: httpx.Client) -> None:
    tok = token(http).json()["tenant_access_token"]
    root = send(http, tok).json()["data"]["message_id"]
    body = {"msg_type": "text", "content": '{"text":"r"}'}
    first = http.post(f"{MESSAGES}/{root}/reply", json={**body, "reply_in_thread": True}, headers=auth(tok))
    second = http.post(f"{MESSAGES}/{root}/reply", json=body, headers=auth(tok))
    plain = http.post(f"{MESSAGES}/om_unknown/reply", json=body, headers=auth(tok)).json()["data"]
    assert first.json()["data"]["thread_id"] == second.json()["data"]["thread_id"]
    assert first.json()["data"]["parent_id"] == root
    assert "thread_id" not in plain and plain["parent_id"] == "om_unknown"


def test_patch_only_updates_interactive_messages_and_records_history(
    http: httpx.Client, api: FakeOpenAPI
) -> None:
    tok = token(http).json()["tenant_access_token"]
    text_id = send(http, tok).json()["data"]["message_id"]
    card_id = send(http, tok, "interactive", CARD).json()["data"]["message_id"]
    refused = http.patch(f"{MESSAGES}/{text_id}", json={"content": CARD}, headers=auth(tok))
    assert refused.json()["code"] == 230001
    ok = http.patch(f"{MESSAGES}/{card_id}", json={"content": '{"elements":[]}'}, headers=auth(tok))
    assert ok.json() == {"code": 0, "data": {}, "msg": "ok"}
    assert api.messages[card_id].contents == [CARD, '{"elements":[]}']


def test_patch_over_5_qps_per_message_answers_230020(http: httpx.Client) -> None:
    tok = token(http).json()["tenant_access_token"]
    card_id = send(http, tok, "interactive", CARD).json()["data"]["message_id"]
    codes = [
        http.patch(f"{MESSAGES}/{card_id}", json={"content": CARD}, headers=auth(tok)).json()["code"]
        for _ in range(6)
    ]
    assert codes == [0, 0, 0, 0, 0, 230020]


def test_patch_of_a_card_older_than_14_days_answers_230031(
    http: httpx.Client, clock: Clock, api: FakeOpenAPI
) -> None:
    api.add_message("om_old", APP_ID, "interactive", CARD)
    clock.now += 14 * 86400 + 1
    tok = token(http).json()["tenant_access_token"]
    too_old = http.patch(f"{MESSAGES}/om_old", json={"content": CARD}, headers=auth(tok))
    assert too_old.json()["code"] == 230031


def test_card_token_allows_two_delayed_updates_within_30_minutes(
    http: httpx.Client, api: FakeOpenAPI, clock: Clock
) -> None:
    api.add_message("om_card", APP_ID, "interactive", CARD)
    tok = token(http).json()["tenant_access_token"]
    c1, c2 = api.issue_card_token(APP_ID, "om_card"), api.issue_card_token(APP_ID)

    def update(card_token: str) -> int:
        body = {"token": card_token, "card": {"elements": []}}
        answer = http.post("/open-apis/interactive/v1/card/update", json=body, headers=auth(tok))
        return int(answer.json()["code"])

    assert [update(c1), update(c1), update(c1)] == [0, 0, 230001]
    assert len(api.messages["om_card"].contents) == 3
    clock.now += 1801
    assert update(c2) == 230001


def test_more_than_the_app_rate_limit_per_second_answers_429(clock: Clock) -> None:
    with FakeOpenAPI(clock=clock, app_rate_limit=3) as api, httpx.Client(base_url=api.url) as http:
        api.add_app(APP_ID, SECRET)
        tok = token(http).json()["tenant_access_token"]
        answers = [send(http, tok) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert answers[3].json()["code"] == 99991400
    assert answers[3].headers["x-ogw-ratelimit-limit"] == "3"
    assert float(answers[3].headers["x-ogw-ratelimit-reset"]) >= 0


def test_injected_errors_apply_to_matching_paths_for_count_requests(
    http: httpx.Client, api: FakeOpenAPI
) -> None:
    api.inject_error(230002, "bot not in chat", path_contains="/reply", count=1)
    api.inject_rate_limit(count=1, reset=0.25)
    tok = token(http).json()["tenant_access_token"]  # the token path is not matched by default
    limited = send(http, tok)
    assert (limited.status_code, limited.headers["x-ogw-ratelimit-reset"]) == (429, "0.25")
    assert send(http, tok).status_code == 200
    body = {"msg_type": "text", "content": '{"text":"r"}'}
    replies = [http.post(f"{MESSAGES}/om_1/reply", json=body, headers=auth(tok)) for _ in range(2)]
    assert [r.json()["code"] for r in replies] == [230002, 0]


def test_recorded_calls_mask_the_token_and_wait_for_calls_times_out(
    http: httpx.Client, api: FakeOpenAPI
) -> None:
    tok = token(http).json()["tenant_access_token"]
    send(http, tok)
    [call] = api.wait_for_calls(MESSAGES)
    assert call.headers["authorization"] == "Bearer ***"
    assert tok not in repr(api.calls)
    assert (call.method, call.query, call.app_id, call.token_seq, call.status, call.code) == (
        "POST",
        {"receive_id_type": "open_id"},
        APP_ID,
        1,
        200,
        0,
    )
    with pytest.raises(TimeoutError):
        api.wait_for_calls(lambda c: c.method == "DELETE", timeout=0.05)
