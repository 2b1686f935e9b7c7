"""The original protocol through our nginx + nchan config (deploy/nchan/), with real nginx, real
WebSockets and real HTTP. Independent of our Python relay."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection
from websockets.exceptions import InvalidStatus

from nchan_server import NchanRelay, nchan_relay_fixture  # noqa: F401  (the `nchan_relay` fixture)

SIGNED = {"X-Lark-Signature": "0" * 64, "X-Lark-Request-Timestamp": "1700000000", "X-Lark-Request-Nonce": "n"}
RECV_TIMEOUT = 5.0


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def subscribed(relay: NchanRelay, path: str, count: int = 1, **kwargs: Any) -> ClientConnection:
    """Open a WebSocket to ``path`` and return once nchan counts ``count`` subscribers in total."""
    ws = await websockets.connect(f"{relay.ws_url}{path}", open_timeout=5, **kwargs)
    await asyncio.to_thread(relay.wait_for_subscribers, count)
    return ws


async def recv_json(ws: Connection) -> dict[str, object]:
    frame = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
    data = json.loads(frame)
    assert isinstance(data, dict)
    return data


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def test_subscriber_receives_envelope_of_webhook_post(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    """Headers lower-cased plus x-app-id/x-org-id/x-request-id; body and raw_body exact; no credentials."""
    body = b'{"schema":"2.0","n":12345678901234567890,"list":[],"text":"\xe4\xbd\xa0\xe5\xa5\xbd"}'
    async with await subscribed(nchan_relay, "/sub/cli_a") as ws:
        resp = await http.post(
            f"{nchan_relay.url}/hook/cli_a",
            content=body,
            headers={
                **SIGNED,
                "X-Request-Id": "rid-0001",
                "Content-Type": "application/json",
                "Authorization": "Bearer secret",
                "Cookie": "c=1",
            },
        )
        assert resp.status_code == 200
        envelope = await recv_json(ws)
    headers = envelope["headers"]
    assert isinstance(headers, dict)
    assert headers["x-app-id"] == "cli_a"
    assert headers["x-org-id"] == "hook"
    assert headers["x-request-id"] == "rid-0001"
    assert headers["x-lark-signature"] == "0" * 64
    assert headers["content-type"] == "application/json"
    assert all(name == name.lower() for name in headers)
    assert "authorization" not in headers and "cookie" not in headers
    assert envelope["body"] == json.loads(body)
    assert envelope["raw_body"] == body.decode()


async def test_challenge_waits_and_gets_the_reply_posted_to_sub_request_id(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    challenge = {"challenge": "c-123", "token": "t", "type": "url_verification"}
    async with await subscribed(nchan_relay, "/sub/cli_a") as ws:
        pending = asyncio.create_task(
            http.post(f"{nchan_relay.url}/hook/cli_a", json=challenge, headers={"X-Request-Id": "req-42"})
        )
        envelope = await recv_json(ws)
        assert envelope["body"] == challenge
        reply = await http.post(f"{nchan_relay.url}/sub/req-42", json={"challenge": "c-123"})
        assert reply.status_code in (201, 202)
        resp = await asyncio.wait_for(pending, RECV_TIMEOUT)
    assert resp.status_code == 200
    assert resp.json() == {"challenge": "c-123"}


async def test_request_ids_sharing_a_prefix_before_a_dash_are_not_mixed_up(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    """The original cut ids at the first '-': 7f3a-0001 and 7f3a-0002 were the same channel."""
    ids = ["7f3a-0001", "7f3a-0002"]
    async with await subscribed(nchan_relay, "/sub/cli_a") as ws:
        pending = {
            rid: asyncio.create_task(
                http.post(
                    f"{nchan_relay.url}/hook/cli_a",
                    json={"type": "url_verification", "challenge": f"for-{rid}"},
                    headers={"X-Request-Id": rid},
                )
            )
            for rid in ids
        }
        seen = set()
        for _ in ids:
            headers = (await recv_json(ws))["headers"]
            assert isinstance(headers, dict)
            seen.add(headers["x-request-id"])
        assert seen == set(ids)
        for rid in reversed(ids):
            await http.post(f"{nchan_relay.url}/sub/{rid}", json={"challenge": f"for-{rid}"})
        answers = {rid: (await asyncio.wait_for(task, RECV_TIMEOUT)).json() for rid, task in pending.items()}
    assert answers == {rid: {"challenge": f"for-{rid}"} for rid in ids}


async def test_reply_posted_before_the_challenge_waits_is_not_lost(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    """The reply channel keeps its last message for 5 s, so an early reply still answers."""
    early = await http.post(f"{nchan_relay.url}/sub/early-1", json={"challenge": "early"})
    assert early.status_code in (201, 202)
    async with await subscribed(nchan_relay, "/sub/cli_a"):
        resp = await http.post(
            f"{nchan_relay.url}/hook/cli_a",
            json={"type": "url_verification", "challenge": "early"},
            headers={"X-Request-Id": "early-1"},
        )
    assert resp.status_code == 200
    assert resp.json() == {"challenge": "early"}


async def test_unanswered_challenge_ends_with_a_non_200_after_the_bounded_wait(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribed(nchan_relay, "/sub/cli_a"):
        resp = await http.post(
            f"{nchan_relay.url}/hook/cli_a",
            json={"type": "url_verification", "challenge": "nobody"},
            headers={"X-Request-Id": "unanswered-1"},
        )
    assert resp.status_code in (304, 408)


async def test_signed_event_is_answered_at_once_without_waiting_for_a_reply(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    """200 with no reply ever posted (an unsigned request would wait and end with 408)."""
    async with await subscribed(nchan_relay, "/sub/cli_a") as ws:
        resp = await http.post(
            f"{nchan_relay.url}/hook/cli_a",
            json={"encrypt": "abc"},
            headers={**SIGNED, "X-Request-Id": "ev-1"},
        )
        assert resp.status_code == 200
        assert (await recv_json(ws))["body"] == {"encrypt": "abc"}


async def test_event_without_any_subscriber_is_not_answered_200(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    """nchan dropped it; a 503 makes Feishu retry instead of counting it delivered."""
    resp = await http.post(f"{nchan_relay.url}/hook/cli_nobody", json={"encrypt": "x"}, headers=SIGNED)
    assert resp.status_code == 503


async def test_org_channel_subscriber_with_the_right_password_receives_org_events(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    nchan_relay.add_user("acme-bot", "s3cret")
    async with await subscribed(
        nchan_relay, "/sub/org_acme", additional_headers=basic("acme-bot", "s3cret")
    ) as ws:
        resp = await http.post(f"{nchan_relay.url}/org_acme/cli_b", json={"encrypt": "e"}, headers=SIGNED)
        assert resp.status_code == 200
        headers = (await recv_json(ws))["headers"]
    assert isinstance(headers, dict)
    assert (headers["x-org-id"], headers["x-app-id"]) == ("org_acme", "cli_b")


@pytest.mark.parametrize("scheme", ["-m", "-s"])
async def test_org_channel_accepts_apr1_and_sha_htpasswd_entries(
    nchan_relay: NchanRelay, scheme: str
) -> None:
    nchan_relay.add_user("acme-bot", "s3cret", scheme=scheme)
    ws = await subscribed(nchan_relay, "/sub/org_acme", additional_headers=basic("acme-bot", "s3cret"))
    await ws.close()


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/sub/org_acme", basic("acme-bot", "wrong")),
        ("/sub/org_acme", {}),
        ("/sub/cli_a,org_acme", {}),  # the original's unanchored check missed an org listed second
    ],
    ids=["wrong-password", "no-credentials", "org-listed-after-another-channel"],
)
async def test_org_channel_subscription_is_refused_without_valid_credentials(
    nchan_relay: NchanRelay, path: str, headers: dict[str, str]
) -> None:
    nchan_relay.add_user("acme-bot", "s3cret")
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(f"{nchan_relay.ws_url}{path}", additional_headers=headers, open_timeout=5)
    assert info.value.response.status_code in (401, 403)


async def test_body_of_20_kb_arrives_intact(nchan_relay: NchanRelay, http: httpx.AsyncClient) -> None:
    """The original buffered bodies above client_body_buffer_size to a file and sent {} instead."""
    body = json.dumps({"encrypt": "A" * 20_000, "list": list(range(100))}, separators=(",", ":"))
    async with await subscribed(nchan_relay, "/sub/cli_a") as ws:
        resp = await http.post(f"{nchan_relay.url}/hook/cli_a", content=body, headers=SIGNED)
        assert resp.status_code == 200
        envelope = await recv_json(ws)
    assert envelope["raw_body"] == body
    assert envelope["body"] == json.loads(body)


async def test_body_over_one_megabyte_is_refused_with_413(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    body = json.dumps({"encrypt": "A" * (1024 * 1024)})
    resp = await http.post(f"{nchan_relay.url}/hook/cli_a", content=body, headers=SIGNED)
    assert resp.status_code == 413


@pytest.mark.parametrize(
    "body", [b"not json", b'{"a":', b'{"a":"\xff"}'], ids=["text", "truncated", "not-utf8"]
)
async def test_body_that_is_not_utf8_json_is_refused_with_400(
    nchan_relay: NchanRelay, http: httpx.AsyncClient, body: bytes
) -> None:
    async with await subscribed(nchan_relay, "/sub/cli_a"):
        resp = await http.post(f"{nchan_relay.url}/hook/cli_a", content=body, headers=SIGNED)
    assert resp.status_code == 400


async def test_ping_is_answered_with_pong(nchan_relay: NchanRelay) -> None:
    async with await subscribed(nchan_relay, "/sub/cli_a") as ws:
        await ws.send("PING")
        assert await asyncio.wait_for(ws.recv(), RECV_TIMEOUT) == "PONG"


async def test_frames_a_subscriber_sends_are_not_published_to_the_channel(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    """The original's nchan_pubsub echoed any frame to every bot on the channel."""
    async with (
        await subscribed(nchan_relay, "/sub/cli_a") as listener,
        await subscribed(nchan_relay, "/sub/cli_a", count=2) as talker,
    ):
        await talker.send('{"headers":{},"body":{"fake":true}}')
        await talker.send("PING")
        assert await asyncio.wait_for(talker.recv(), RECV_TIMEOUT) == "PONG"  # the fake frame went first
        await http.post(f"{nchan_relay.url}/hook/cli_a", json={"real": True}, headers=SIGNED)
        assert (await recv_json(listener))["body"] == {"real": True}


async def test_one_websocket_subscribes_to_several_channels(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    async with await subscribed(nchan_relay, "/sub/cli_a,cli_b") as ws:
        for app in ("cli_a", "cli_b"):
            resp = await http.post(f"{nchan_relay.url}/hook/{app}", json={"app": app}, headers=SIGNED)
            assert resp.status_code == 200
            assert (await recv_json(ws))["body"] == {"app": app}


@pytest.mark.parametrize("path", ["/cli_b/cli_a", "/hook/cli_a/extra", "/sub/cli_a/extra"])
async def test_paths_outside_the_protocol_are_404(
    nchan_relay: NchanRelay, http: httpx.AsyncClient, path: str
) -> None:
    """The original published /<anything>/<app> to channel <anything>."""
    resp = await http.post(f"{nchan_relay.url}{path}", json={}, headers=SIGNED)
    assert resp.status_code == 404


async def test_healthz_and_status_answer(nchan_relay: NchanRelay, http: httpx.AsyncClient) -> None:
    assert (await http.get(f"{nchan_relay.url}/healthz")).text == "ok\n"
    status = await http.get(f"{nchan_relay.url}/status")
    assert status.status_code == 200
    assert "subscribers: 0" in status.text


async def test_delete_on_a_channel_is_refused_and_its_subscriber_keeps_receiving(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    """The original's nchan_pubsub let anyone DELETE a channel and disconnect its bots."""
    async with await subscribed(nchan_relay, "/sub/cli_a") as ws:
        assert (await http.delete(f"{nchan_relay.url}/sub/cli_a")).status_code == 403
        await http.post(f"{nchan_relay.url}/hook/cli_a", json={"still": "here"}, headers=SIGNED)
        assert (await recv_json(ws))["body"] == {"still": "here"}


async def test_challenge_without_request_id_gets_one_and_can_be_answered(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    """The original could not answer a challenge that came without X-Request-Id."""
    async with await subscribed(nchan_relay, "/sub/cli_a") as ws:
        pending = asyncio.create_task(
            http.post(f"{nchan_relay.url}/hook/cli_a", json={"type": "url_verification", "challenge": "x"})
        )
        headers = (await recv_json(ws))["headers"]
        assert isinstance(headers, dict)
        rid = headers["x-request-id"]
        assert len(rid) == 32
        await http.post(f"{nchan_relay.url}/sub/{rid}", json={"challenge": "x"})
        resp = await asyncio.wait_for(pending, RECV_TIMEOUT)
    assert resp.json() == {"challenge": "x"}


async def test_request_id_naming_an_org_channel_does_not_read_its_events(
    nchan_relay: NchanRelay, http: httpx.AsyncClient
) -> None:
    """Waiting requests live in their own namespace: X-Request-Id: org_acme is not the org's channel."""
    nchan_relay.add_user("acme-bot", "s3cret")
    async with (
        await subscribed(nchan_relay, "/sub/cli_a") as bot_a,
        await subscribed(
            nchan_relay, "/sub/org_acme", count=2, additional_headers=basic("acme-bot", "s3cret")
        ) as org,
    ):
        snoop = asyncio.create_task(
            http.post(
                f"{nchan_relay.url}/hook/cli_a",
                json={"type": "url_verification", "challenge": "snoop"},
                headers={"X-Request-Id": "org_acme"},
            )
        )
        await recv_json(bot_a)  # the snooping request is now waiting
        await http.post(f"{nchan_relay.url}/org_acme/cli_b", json={"secret": 1}, headers=SIGNED)
        assert (await recv_json(org))["body"] == {"secret": 1}
        resp = await asyncio.wait_for(snoop, RECV_TIMEOUT)
    assert resp.status_code in (304, 408)
