"""The stall watch (relay/stall.py): a buffered event still unacked while its bot stays connected is
reported at once (a warning, ``/status`` ``buffer_stalled``, ``wslarkbot_buffer_stalled_events``) and the
report clears when the event is acked. In memory and on a real redis-server; real sockets, no mocks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from delivery_helpers import ack, event
from fault_harness import wait_until
from redis_server import REDIS_MARKS, redis_server_fixture  # noqa: F401  (registers `redis_server`)
from system_programs import require
from wslarkbot.relay import run_relay
from wslarkbot.relay.config import RelayConfig
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import SIGNED, RedisServer, recv_json, test_config

STALL_AFTER = 0.6


@pytest.fixture(params=["memory", "redis"])
async def relay(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[RunningRelay]:
    changes: dict[str, Any] = {"buffer": "cli_*", "buffer_stall_after": STALL_AFTER, "ack_timeout": 0.3}
    server: RedisServer | None = None
    if request.param == "redis":
        require("redis-server")
        server = await RedisServer(tmp_path).start()
        changes["redis_url"] = server.url
    try:
        async with run_relay(test_config(**changes)) as running:
            yield running
    finally:
        if server is not None:
            await server.stop()


async def stalled(http: httpx.AsyncClient, relay: RunningRelay) -> int:
    return int((await http.get(f"{relay.url}/status")).json()["buffer_stalled"])


async def test_an_unacked_buffered_event_with_its_bot_connected_is_reported_then_cleared_by_the_ack(
    relay: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wslarkbot.relay")
    async with httpx.AsyncClient(timeout=5) as http, connect(relay.ws_url("cli_stall")) as ws:
        assert (await recv_json(ws))["type"] == "hello"
        call = asyncio.ensure_future(http.post(f"{relay.url}/hook/cli_stall", json=event(1), headers=SIGNED))
        env = await recv_json(ws)  # received, never acked in time
        resp = await call
        assert (resp.status_code, resp.json()) == (200, {"msg": "buffered"})
        assert await stalled(http, relay) == 0

        await wait_until(lambda: stalled(http, relay), 10, "the stall reported")
        assert await stalled(http, relay) == 1
        lines = [r.getMessage() for r in caplog.records if "unacked for" in r.getMessage()]
        assert len(lines) == 1 and f"buffered event {env['id']} of channel cli_stall" in lines[0]
        assert "1 subscriber(s)" in lines[0] and "headers" not in lines[0]  # ids, never the payload
        metrics = (await http.get(f"{relay.url}/metrics")).text
        assert "wslarkbot_buffer_stalled_events 1.0" in metrics

        await ack(ws, env)  # late: the webhook was answered long ago; the entry is settled all the same
        await wait_until(lambda: _zero(stalled(http, relay)), 10, "the stall cleared by the ack")
        # reported once, not once per check
        assert len([r for r in caplog.records if "unacked for" in r.getMessage()]) == 1


async def _zero(value: Any) -> bool:
    return await value == 0


async def test_events_of_a_channel_without_a_subscriber_are_not_reported_as_stalled(
    relay: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wslarkbot.relay")
    async with httpx.AsyncClient(timeout=5) as http, connect(relay.ws_url("cli_watched")) as ws:
        assert (await recv_json(ws))["type"] == "hello"
        nobody = await http.post(f"{relay.url}/hook/cli_nobody", json=event(1), headers=SIGNED)
        assert nobody.json() == {"msg": "buffered"}
        watched = asyncio.ensure_future(
            http.post(f"{relay.url}/hook/cli_watched", json=event(2), headers=SIGNED)
        )
        await recv_json(ws)
        assert (await watched).json() == {"msg": "buffered"}
        # the watched channel's stall being reported proves a check ran past the threshold for both
        await wait_until(lambda: stalled(http, relay), 10, "the watched channel's stall reported")
        assert await stalled(http, relay) == 1
        lines = [r.getMessage() for r in caplog.records if "unacked for" in r.getMessage()]
        assert lines and all("channel cli_watched" in line for line in lines), lines


def test_buffer_stall_after_must_not_be_negative() -> None:
    from wslarkbot.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="buffer_stall_after"):
        RelayConfig(buffer_stall_after=-1)


pytestmark = [pytest.mark.timeout(60), *REDIS_MARKS[1:]]
