"""The fake OpenAPI's model answers requests by Feishu's rules without any socket."""

from __future__ import annotations

import json
from typing import Any

from fake_clock import Clock
from wslarkbot.sim.openapi_state import TOKEN_PATH, Answer, FakeRequest, OpenAPIState

APP_ID, SECRET = "cli_state", "secret"


def call(
    state: OpenAPIState, method: str, path: str, body: Any = None, token: str | None = None, **query: str
) -> Answer:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    request = FakeRequest(method, path, query, headers, raw)
    return state.answer(request, state.record(request))


def token_of(state: OpenAPIState) -> str:
    answer = call(state, "POST", TOKEN_PATH, {"app_id": APP_ID, "app_secret": SECRET})
    assert answer.status == 200 and answer.body is not None
    return str(answer.body["tenant_access_token"])


def new_state(**kwargs: Any) -> OpenAPIState:
    state = OpenAPIState(**kwargs)
    state.add_app(APP_ID, SECRET)
    return state


def test_sent_message_is_stored_and_the_recorded_call_masks_the_bearer_token() -> None:
    state = new_state()
    tok = token_of(state)
    answer = call(
        state,
        "POST",
        "/open-apis/im/v1/messages",
        {"receive_id": "ou_1", "msg_type": "text", "content": '{"text":"hi"}'},
        tok,
        receive_id_type="open_id",
    )
    assert answer.status == 200 and answer.code == 0 and answer.body is not None
    message_id = answer.body["data"]["message_id"]
    assert state.messages[message_id].content == {"text": "hi"}
    recorded = state.calls_to("/im/v1/messages")[0]
    assert recorded.headers["authorization"] == "Bearer ***" and recorded.app_id == APP_ID
    assert recorded.status == 200 and tok not in json.dumps(recorded.headers)


def test_patch_limit_follows_the_injected_monotonic_clock() -> None:
    """Five PATCHes per message per second; the sixth is 230020 until the clock moves a second on."""
    now = [100.0]
    state = new_state(patch_qps=5, monotonic=lambda: now[0])
    state.add_message("om_card", APP_ID, "interactive", {"elements": []})
    tok = token_of(state)
    codes = [
        call(state, "PATCH", "/open-apis/im/v1/messages/om_card", {"content": '{"elements":[]}'}, tok).code
        for _ in range(6)
    ]
    assert codes == [0, 0, 0, 0, 0, 230020]
    now[0] += 1.0
    card = {"content": '{"elements":[]}'}
    assert call(state, "PATCH", "/open-apis/im/v1/messages/om_card", card, tok).code == 0


def test_bad_json_is_a_validation_error_and_unknown_paths_a_plain_404() -> None:
    state = new_state(clock=Clock())
    bad = call(state, "POST", TOKEN_PATH, b"{not json")
    assert (bad.status, bad.code) == (400, 99992402) and "X-Tt-Logid" in bad.headers
    assert bad.body is not None and bad.body["error"]["log_id"] == bad.headers["X-Tt-Logid"]
    missing = call(state, "GET", "/open-apis/nothing/here", token=token_of(state))
    assert (missing.status, missing.body, missing.code) == (404, None, -1)


def test_unanswered_calls_are_visible_only_when_asked_for() -> None:
    state = new_state()
    state.record(FakeRequest("POST", TOKEN_PATH))
    assert len(state.wait_for_calls(TOKEN_PATH, answered=False, timeout=0)) == 1
    assert state.calls[0].status is None
