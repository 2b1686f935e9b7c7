"""The relay's publish / subscribe / reply paths, over real sockets (relay on port 0, websockets, httpx)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from wslarkbot.relay import InMemoryHub, create_app, run_relay
from wslarkbot.relay.hub import Event, Subscriber
from wslarkbot.relay.pending import Outcome, Resolution
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import SIGNED, recv_json, recv_text, test_config

CHALLENGE = {"challenge": "ajls384kdjx", "token": "vt", "type": "url_verification"}
CARD_V2 = {"schema": "2.0", "header": {"event_type": "card.action.trigger", "event_id": "e1"}, "event": {}}
CARD_LEGACY = {"open_id": "ou_1", "open_message_id": "om_1", "token": "c-1", "action": {"tag": "button"}}
EVENT = {"schema": "2.0", "header": {"event_type": "im.message.receive_v1", "event_id": "e2"}, "event": {}}


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    async with run_relay(test_config(allow_anonymous_orgs=True)) as r:
        yield r


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def subscribe(relay: RunningRelay, channels: str, proto: int | None = 2) -> ClientConnection:
    """Connect; for protocol 2, consume and check the hello frame."""
    ws = await connect(relay.ws_url(channels, proto=proto))
    if proto == 2:
        hello = await recv_json(ws)
        assert hello["type"] == "hello"
    return ws


def post(http: httpx.AsyncClient, url: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    return http.post(url, content=data, headers={"Content-Type": "application/json", **(headers or {})})


async def test_subscriber_receives_envelope_with_lowercased_headers_and_exact_raw_body(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    raw = '{"schema": "2.0",  "text": "你好 ✓"}'.encode()
    async with await subscribe(relay, "cli_a", proto=None) as ws:
        resp = await post(
            http,
            f"{relay.url}/hook/cli_a",
            raw,
            {**SIGNED, "X-Request-Id": "req-1", "Authorization": "Bearer secret", "X-Custom": "v"},
        )
        env = await recv_json(ws)
    assert resp.status_code == 200
    assert env["headers"]["x-app-id"] == "cli_a"
    assert env["headers"]["x-org-id"] == "hook"
    assert env["headers"]["x-request-id"] == "req-1"
    assert env["headers"]["x-lark-signature"] == "0" * 64
    assert env["headers"]["x-custom"] == "v"
    assert "authorization" not in env["headers"]
    assert env["body"] == {"schema": "2.0", "text": "你好 ✓"}
    assert env["raw_body"].encode() == raw


async def test_invalid_request_id_header_is_replaced_by_a_fresh_hex_id(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_a", proto=None) as ws:
        await post(http, f"{relay.url}/hook/cli_a", EVENT, {**SIGNED, "X-Request-Id": "bad id/with spaces"})
        env = await recv_json(ws)
    rid = env["headers"]["x-request-id"]
    assert len(rid) == 32 and int(rid, 16) >= 0


async def test_org_route_publishes_to_the_org_channel(relay: RunningRelay, http: httpx.AsyncClient) -> None:
    async with await subscribe(relay, "org_acme") as ws:
        pending = asyncio.ensure_future(post(http, f"{relay.url}/org_acme/cli_b", EVENT, SIGNED))
        env = await recv_json(ws)
        await ws.send(json.dumps({"type": "ack", "request_id": env["headers"]["x-request-id"]}))
        resp = await pending
    assert env["headers"]["x-org-id"] == "org_acme"
    assert env["headers"]["x-app-id"] == "cli_b"
    assert resp.status_code == 200


async def test_non_org_prefix_in_org_position_is_404(relay: RunningRelay, http: httpx.AsyncClient) -> None:
    resp = await post(http, f"{relay.url}/acme/cli_b", EVENT, SIGNED)
    assert resp.status_code == 404


async def test_one_connection_receives_from_two_channels(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_a,cli_b", proto=None) as ws:
        await post(http, f"{relay.url}/hook/cli_a", EVENT, SIGNED)
        await post(http, f"{relay.url}/hook/cli_b", EVENT, SIGNED)
        first, second = await recv_json(ws), await recv_json(ws)
    assert {first["headers"]["x-app-id"], second["headers"]["x-app-id"]} == {"cli_a", "cli_b"}


async def test_challenge_answered_by_post_sub_reply_within_one_second(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_a", proto=None) as ws:
        started = time.monotonic()
        pending = asyncio.ensure_future(post(http, f"{relay.url}/hook/cli_a", CHALLENGE))
        env = await recv_json(ws)
        rid = env["headers"]["x-request-id"]
        ack = await post(http, f"{relay.url}/sub/{rid}", {"challenge": env["body"]["challenge"]})
        resp = await pending
    assert ack.status_code == 200 and ack.json() == {"ok": True}
    assert resp.status_code == 200
    assert resp.json() == {"challenge": "ajls384kdjx"}
    assert resp.headers["content-type"].startswith("application/json")
    assert time.monotonic() - started < 1.0


async def test_challenge_answered_by_websocket_reply(relay: RunningRelay, http: httpx.AsyncClient) -> None:
    async with await subscribe(relay, "cli_a") as ws:
        pending = asyncio.ensure_future(post(http, f"{relay.url}/hook/cli_a", CHALLENGE))
        env = await recv_json(ws)
        rid = env["headers"]["x-request-id"]
        await ws.send(json.dumps({"type": "reply", "request_id": rid, "body": {"challenge": "ajls384kdjx"}}))
        resp = await pending
    assert resp.status_code == 200
    assert resp.json() == {"challenge": "ajls384kdjx"}


class ReplyFirstHub(InMemoryHub):
    """A hub whose publish() returns only after the bot's reply has reached the relay.

    This forces the race "reply arrives before the webhook handler starts waiting" every time.
    """

    def __init__(self) -> None:
        super().__init__(max_subscribers_per_channel=10, max_pending_replies=10)
        self.resolved = asyncio.Event()

    async def publish(self, event: Event) -> list[Any]:
        subs = await super().publish(event)
        await asyncio.wait_for(self.resolved.wait(), 3)
        return subs

    async def resolve(self, request_id: str, outcome: Outcome, **kw: Any) -> Resolution:
        result = await super().resolve(request_id, outcome, **kw)
        self.resolved.set()
        return result


async def test_reply_that_arrives_before_the_relay_waits_is_not_lost(http: httpx.AsyncClient) -> None:
    config = test_config()
    app = create_app(config, hub=ReplyFirstHub())
    async with run_relay(config, app=app) as relay, await subscribe(relay, "cli_a", proto=None) as ws:
        pending = asyncio.ensure_future(post(http, f"{relay.url}/hook/cli_a", CHALLENGE))
        env = await recv_json(ws)
        rid = env["headers"]["x-request-id"]
        ack = await post(http, f"{relay.url}/sub/{rid}", {"challenge": "early"})
        resp = await pending
    assert ack.status_code == 200
    assert resp.status_code == 200 and resp.json() == {"challenge": "early"}


async def test_reply_to_unknown_request_id_is_404(relay: RunningRelay, http: httpx.AsyncClient) -> None:
    resp = await post(http, f"{relay.url}/sub/nonexistent-id", {"challenge": "x"})
    assert resp.status_code == 404
    assert "unknown" in resp.json()["msg"]


async def test_reply_with_non_json_body_is_400(relay: RunningRelay, http: httpx.AsyncClient) -> None:
    resp = await post(http, f"{relay.url}/sub/some-id", b"not json")
    assert resp.status_code == 400


async def test_reply_prefix_of_request_id_does_not_match(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_a", proto=None) as ws:
        pending = asyncio.ensure_future(
            post(http, f"{relay.url}/hook/cli_a", CHALLENGE, {"X-Request-Id": "abc-123"})
        )
        await recv_json(ws)
        wrong = await post(http, f"{relay.url}/sub/abc", {"challenge": "x"})
        resp = await pending
    assert wrong.status_code == 404
    assert resp.status_code == 504


async def test_reply_from_connection_not_subscribed_gets_error_frame_and_request_times_out(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_a") as owner, await subscribe(relay, "cli_b") as other:
        pending = asyncio.ensure_future(
            post(http, f"{relay.url}/hook/cli_a", CHALLENGE, {"X-Request-Id": "r-9"})
        )
        await recv_json(owner)
        await other.send(json.dumps({"type": "reply", "request_id": "r-9", "body": {"challenge": "stolen"}}))
        err = await recv_json(other)
        resp = await pending
    assert err["type"] == "error" and err["request_id"] == "r-9"
    assert "not subscribed" in err["reason"]
    assert resp.status_code == 504


async def test_webhook_with_no_subscriber_is_503_with_retry_after(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    resp = await post(http, f"{relay.url}/hook/cli_nobody", EVENT, SIGNED)
    assert resp.status_code == 503
    assert resp.headers["retry-after"].isdigit()
    assert resp.json() == {"msg": "no subscriber connected for channel cli_nobody"}


async def test_unanswered_challenge_is_504_within_the_deadline(http: httpx.AsyncClient) -> None:
    async with run_relay(test_config(challenge_timeout=0.3)) as relay, await subscribe(relay, "cli_a") as ws:
        started = time.monotonic()
        resp = await post(http, f"{relay.url}/hook/cli_a", CHALLENGE)
        elapsed = time.monotonic() - started
        await recv_json(ws)
    assert resp.status_code == 504
    assert resp.json() == {"msg": "no reply from the bot within 0.3 s"}
    assert 0.3 <= elapsed < 0.9


async def test_protocol2_ack_answers_event_with_200_success(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_a") as ws:
        pending = asyncio.ensure_future(post(http, f"{relay.url}/hook/cli_a", EVENT, SIGNED))
        env = await recv_json(ws)
        await ws.send(json.dumps({"type": "ack", "request_id": env["headers"]["x-request-id"]}))
        resp = await pending
    assert resp.status_code == 200 and resp.json() == {"msg": "success"}


async def test_protocol2_reply_to_encrypted_body_becomes_the_response(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_a") as ws:
        pending = asyncio.ensure_future(post(http, f"{relay.url}/hook/cli_a", {"encrypt": "AAAA"}, SIGNED))
        env = await recv_json(ws)
        toast = {"toast": {"type": "info", "content": "好"}}
        await ws.send(
            json.dumps({"type": "reply", "request_id": env["headers"]["x-request-id"], "body": toast})
        )
        resp = await pending
    assert resp.status_code == 200 and resp.json() == toast
    # Compact JSON with the text as is, as json.dumps(ensure_ascii=False, separators=(",", ":")) writes it.
    assert resp.content.decode("utf-8") == '{"toast":{"type":"info","content":"好"}}'


async def test_event_to_legacy_only_subscriber_is_answered_200_at_once(http: httpx.AsyncClient) -> None:
    async with (
        run_relay(test_config(ack_timeout=5)) as relay,
        await subscribe(relay, "cli_a", proto=None) as ws,
    ):
        started = time.monotonic()
        resp = await post(http, f"{relay.url}/hook/cli_a", EVENT, SIGNED)
        elapsed = time.monotonic() - started
        await recv_json(ws)
    assert resp.status_code == 200 and resp.json() == {"msg": "success"}
    assert elapsed < 1.0


async def test_event_to_unanswering_protocol2_subscriber_is_504(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_a") as ws:
        resp = await post(http, f"{relay.url}/hook/cli_a", EVENT, SIGNED)
        await recv_json(ws)
    assert resp.status_code == 504


@pytest.mark.parametrize("body", [CARD_V2, CARD_LEGACY], ids=["v2", "legacy"])
async def test_plaintext_card_callback_to_legacy_subscriber_waits_for_post_sub_reply(
    relay: RunningRelay, http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    async with await subscribe(relay, "cli_a", proto=None) as ws:
        pending = asyncio.ensure_future(post(http, f"{relay.url}/hook/cli_a", body, SIGNED))
        env = await recv_json(ws)
        await post(http, f"{relay.url}/sub/{env['headers']['x-request-id']}", {"toast": {"content": "ok"}})
        resp = await pending
    assert resp.status_code == 200 and resp.json() == {"toast": {"content": "ok"}}


async def test_hello_is_sent_only_with_proto_2(relay: RunningRelay, http: httpx.AsyncClient) -> None:
    async with (
        await connect(relay.ws_url("cli_a,cli_b", proto=2)) as new,
        await connect(relay.ws_url("cli_a", proto=None)) as old,
    ):
        hello = await recv_json(new)
        await post(http, f"{relay.url}/hook/cli_a", EVENT, SIGNED)
        first_old = await recv_json(old)
    assert hello["type"] == "hello" and hello["protocol"] == 2
    assert hello["channels"] == ["cli_a", "cli_b"]
    assert hello["server"].startswith("wslarkbot/")
    assert "type" not in first_old and first_old["headers"]["x-app-id"] == "cli_a"


@pytest.mark.parametrize("proto", [None, 2])
async def test_text_ping_is_answered_pong(relay: RunningRelay, proto: int | None) -> None:
    async with await subscribe(relay, "cli_a", proto=proto) as ws:
        await ws.send("PING")
        assert await recv_text(ws) == "PONG"


async def test_same_request_id_while_pending_gets_a_fresh_id(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_a") as ws:
        hdrs = {"X-Request-Id": "dup-1"}
        first = asyncio.ensure_future(post(http, f"{relay.url}/hook/cli_a", CHALLENGE, hdrs))
        env1 = await recv_json(ws)
        second = asyncio.ensure_future(post(http, f"{relay.url}/hook/cli_a", CHALLENGE, hdrs))
        env2 = await recv_json(ws)
        ids = [env1["headers"]["x-request-id"], env2["headers"]["x-request-id"]]
        for i, rid in enumerate(ids):
            await ws.send(json.dumps({"type": "reply", "request_id": rid, "body": {"n": i}}))
        r1, r2 = await first, await second
    assert ids[0] == "dup-1" and ids[1] != "dup-1"
    assert (r1.json(), r2.json()) == ({"n": 0}, {"n": 1})


async def test_second_answer_to_a_request_gets_an_error_frame(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_a") as ws:
        pending = asyncio.ensure_future(
            post(http, f"{relay.url}/hook/cli_a", CHALLENGE, {"X-Request-Id": "r2"})
        )
        await recv_json(ws)
        await ws.send(json.dumps({"type": "reply", "request_id": "r2", "body": {"challenge": "a"}}))
        resp = await pending
        await ws.send(json.dumps({"type": "ack", "request_id": "r2"}))
        err = await recv_json(ws)
    assert resp.json() == {"challenge": "a"}
    assert err["type"] == "error" and err["request_id"] == "r2"


async def test_unparseable_client_frame_gets_error_and_connection_stays(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_a") as ws:
        await ws.send("{not json")
        err = await recv_json(ws)
        await ws.send("PING")
        pong = await recv_text(ws)
    assert err["type"] == "error" and "JSON" in err["reason"]
    assert pong == "PONG"


async def test_hub_says_an_event_may_be_answered_only_while_a_protocol2_subscriber_is_on_it() -> None:
    hub = InMemoryHub(max_subscribers_per_channel=10, max_pending_replies=10)
    legacy = Subscriber(("cli_a",), protocol=1, peer="p1", max_buffer_bytes=1000)
    modern = Subscriber(("cli_a", "cli_b"), protocol=2, peer="p2", max_buffer_bytes=1000)
    await hub.subscribe(legacy)
    assert not hub.may_answer("cli_a")
    await hub.subscribe(modern)
    assert hub.may_answer("cli_a") and hub.may_answer("cli_b")
    await hub.unsubscribe(modern)
    assert not hub.may_answer("cli_a") and not hub.may_answer("cli_b")


async def test_event_to_original_clients_is_answered_at_once_and_leaves_no_waiting_entry(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribe(relay, "cli_a", proto=None) as ws:
        resp = await post(http, f"{relay.url}/hook/cli_a", EVENT, SIGNED)
        await recv_json(ws)
        status = relay.status()
    assert resp.status_code == 200
    assert status["pending_replies"] == 0


async def test_hub_fans_out_to_the_groups_of_the_event_channel_only_while_they_have_members() -> None:
    hub = InMemoryHub(max_subscribers_per_channel=10, max_pending_replies=10)

    def member(channel: str, group: str | None) -> Subscriber:
        return Subscriber((channel,), protocol=1, peer="p", max_buffer_bytes=1 << 20, group=group)

    workers_a, workers_b, audit, other = (
        member("cli_a", "workers"),
        member("cli_a", "workers"),
        member("cli_a", "audit"),
        member("cli_b", "workers"),
    )
    broadcast = member("cli_a", None)
    for sub in (workers_a, workers_b, audit, other, broadcast):
        await hub.subscribe(sub)
    assert hub.fanout.groups_of("cli_a") == ["workers", "audit"]
    assert hub.fanout.groups_of("cli_b") == ["workers"]
    first = await hub.publish(Event("cli_a", "r1", "1-0", '{"headers":{},"body":{}}'))
    assert broadcast in first and audit in first and len(first) == 3  # one of the two workers
    await hub.unsubscribe(audit)
    assert hub.fanout.groups_of("cli_a") == ["workers"]
    await hub.unsubscribe(workers_a)
    await hub.unsubscribe(workers_b)
    assert hub.fanout.groups_of("cli_a") == [] and hub.fanout.groups_of("cli_b") == ["workers"]
    assert await hub.publish(Event("cli_a", "r2", "1-1", '{"headers":{},"body":{}}')) == [broadcast]


async def test_an_encrypted_request_the_bot_replies_to_is_counted_as_a_callback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The relay cannot read an encrypted body; a reply (not an ack) tells it the request was a callback,
    so the log line, metrics and dashboard show ``kind=callback`` (issue 18)."""
    import logging

    caplog.set_level(logging.INFO, logger="wslarkbot.relay")
    async with (
        run_relay(test_config(admin_user="admin", admin_password="pw")) as relay,
        connect(relay.ws_url("cli_enc")) as ws,
        httpx.AsyncClient(timeout=5) as http,
    ):
        assert (await recv_json(ws))["type"] == "hello"
        call = asyncio.ensure_future(
            http.post(f"{relay.url}/hook/cli_enc", json={"encrypt": "opaque"}, headers=SIGNED)
        )
        env = await recv_json(ws)
        reply = {"type": "reply", "request_id": env["headers"]["x-request-id"], "body": {"toast": {}}}
        await ws.send(json.dumps(reply))
        assert (await call).json() == {"toast": {}}
        metrics = (await http.get(f"{relay.url}/metrics")).text
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("webhook ")]
    assert len(lines) == 1 and "kind=callback" in lines[0] and "outcome=reply-ws" in lines[0]
    assert 'wslarkbot_webhooks_received_total{channel_kind="hook",kind="callback"} 1.0' in metrics
