"""End to end: Feishu (simulator) -> relay -> AsyncClient -> Bot -> relay -> Feishu / fake OpenAPI.

Everything is real and on loopback: the relay (in-process, port 0), the client, the Bot, the Feishu
simulator, the fake OpenAPI. Waits are on events/conditions with timeouts, never sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from e2e_helpers import (  # noqa: F401  (the *_fixture imports register `openapi`, `sims`, `close_bots`)
    FAST_RETRY,
    WAIT,
    close_bots_fixture,
    make_bot,
    make_sim,
    openapi_fixture,
    server_of,
    sims_fixture,
)
from wslarkbot.client import AsyncClient
from wslarkbot.events import CardAction, MessageEvent
from wslarkbot.relay.runner import RunningRelay, run_relay
from wslarkbot.relay.testing import test_config as relay_test_config
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.feishu import FeishuSimulator
from wslarkbot.sim.openapi_server import FakeOpenAPI

# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    async with run_relay(
        relay_test_config(challenge_timeout=0.9, callback_timeout=2.0, ack_timeout=2.0)
    ) as r:
        yield r


async def ready(client: AsyncClient, hellos: int = 1) -> None:
    ok = await asyncio.to_thread(client.status.wait_for, lambda s: s.connected and s.hellos >= hellos, WAIT)
    assert ok, f"client not connected: {client.status!r}"


# -- tests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
async def test_challenge_through_relay_is_answered_within_one_second(
    relay: RunningRelay, sims: list[FeishuSimulator], encrypted: bool
) -> None:
    app = SimApp.random(encrypt=encrypted)
    async with AsyncClient(make_bot(app), server=server_of(relay)) as client:
        await ready(client)
        sim = make_sim(sims, app, f"{relay.url}/hook/{app.app_id}")
        result = await sim.url_verification()
    assert result.ok, result.error
    assert result.elapsed < 1.0
    assert client.status.replies == 1


async def test_encrypted_text_message_reaches_bot_and_its_reply_reaches_openapi(
    relay: RunningRelay, openapi: FakeOpenAPI, sims: list[FeishuSimulator]
) -> None:
    app = SimApp.random()
    bot = make_bot(app, openapi)

    @bot.on_text
    def echo(event: MessageEvent) -> None:
        bot.reply_text(event.message_id, "echo: " + (event.text or ""))

    async with AsyncClient(bot, server=server_of(relay)) as client:
        await ready(client)
        sim = make_sim(sims, app, f"{relay.url}/hook/{app.app_id}")
        result = await sim.send_text_message("你好 relay", message_id="om_e2e1")
        calls = await asyncio.to_thread(openapi.wait_for_calls, "/im/v1/messages/om_e2e1/reply", 1, WAIT)
        await asyncio.to_thread(client.status.wait_for, lambda s: s.acks >= 1, WAIT)
    assert result.delivered and result.retries == 0
    assert calls[0].json["msg_type"] == "text"
    assert "echo: 你好 relay" in calls[0].json["content"]
    assert client.status.acks == 1 and client.status.replies == 0


async def test_card_callback_response_reaches_feishu(
    relay: RunningRelay, sims: list[FeishuSimulator]
) -> None:
    app = SimApp.random()
    bot = make_bot(app)

    @bot.on_card_action
    async def clicked(event: CardAction) -> dict[str, Any]:
        return {"toast": {"type": "success", "content": f"got {event.value['n']}"}}

    async with AsyncClient(bot, server=server_of(relay)) as client:
        await ready(client)
        sim = make_sim(sims, app, f"{relay.url}/hook/{app.app_id}")
        result = await sim.send_card_action({"n": 7})
    assert result.ok, (result.error_code, result.error)
    assert result.response == {"toast": {"type": "success", "content": "got 7"}}


async def test_unsigned_event_is_acked_after_its_handler_even_past_the_challenge_timeout(
    relay: RunningRelay, sims: list[FeishuSimulator]
) -> None:
    """Without an Encrypt Key the event is unsigned plaintext. The relay tells it from a challenge by its
    body and waits for the ack as long as for a signed event, so a handler slower than the challenge
    timeout (0.9 s) is acked when it finishes, and Feishu still gets its 200 at the first attempt."""
    app = SimApp.random(encrypt=False)
    bot = make_bot(app)
    done = threading.Event()

    @bot.on_text
    def slow(event: MessageEvent) -> None:
        time.sleep(1.2)  # the handler's own work, longer than the relay's challenge timeout
        done.set()

    async with AsyncClient(bot, server=server_of(relay), ack_after=2.5) as client:
        await ready(client)
        result = await make_sim(sims, app, f"{relay.url}/hook/{app.app_id}").send_text_message("slow")
        assert not result.attempts[0].headers.get("X-Lark-Signature"), "Feishu did not sign it"
        assert result.delivered and result.retries == 0, result
        assert done.is_set(), "Feishu got its 200 before the handler had finished"
    assert client.status.acks == 1


async def test_two_bots_share_one_connection(relay: RunningRelay, sims: list[FeishuSimulator]) -> None:
    apps = [SimApp.random(), SimApp.random(encrypt=False)]
    seen: dict[str, list[str]] = {a.app_id: [] for a in apps}
    bots = []
    for app in apps:
        bot = make_bot(app)
        bot.on_text(lambda event, app_id=app.app_id: seen[app_id].append(event.text))
        bots.append(bot)
    async with AsyncClient(bots[0], bots=[bots[1]], server=server_of(relay)) as client:
        await ready(client)
        for app in apps:
            sim = make_sim(sims, app, f"{relay.url}/hook/{app.app_id}")
            assert (await sim.url_verification()).ok
            assert (await sim.send_text_message(f"to {app.app_id}")).delivered
    assert client.status.connections == 1
    assert seen == {a.app_id: [f"to {a.app_id}"] for a in apps}


async def test_slow_sync_handler_does_not_delay_another_bots_challenge(
    relay: RunningRelay, sims: list[FeishuSimulator]
) -> None:
    slow_app, other_app = SimApp.random(), SimApp.random()
    slow_bot = make_bot(slow_app)
    gate, started = threading.Event(), threading.Event()

    @slow_bot.on_text
    def slow(event: MessageEvent) -> None:
        started.set()
        gate.wait(WAIT)

    try:
        async with AsyncClient(
            slow_bot, make_bot(other_app), server=server_of(relay), ack_after=0.2
        ) as client:
            await ready(client)
            slow_sim = make_sim(sims, slow_app, f"{relay.url}/hook/{slow_app.app_id}")
            delivery = asyncio.ensure_future(slow_sim.send_text_message("take your time"))
            assert await asyncio.to_thread(started.wait, WAIT)
            other_sim = make_sim(sims, other_app, f"{relay.url}/hook/{other_app.app_id}")
            result = await other_sim.url_verification()
            assert result.ok and result.elapsed < 1.0
            slow_delivered = await asyncio.wait_for(delivery, WAIT)
            assert slow_delivered.delivered, "acked at ack_after while the handler still ran"
            assert not gate.is_set()
            gate.set()  # before leaving the block: stopping waits for handlers in flight
    finally:
        gate.set()


async def test_org_mode_with_the_right_password_dispatches_by_app_id(
    tmp_path: Path, sims: list[FeishuSimulator]
) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("org_acme:" + bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4)).decode() + "\n")
    apps = [SimApp.random(), SimApp.random()]
    seen: list[tuple[str, str | None]] = []
    bots = []
    for app in apps:
        bot = make_bot(app)
        bot.on_text(lambda event, app_id=app.app_id: seen.append((app_id, event.text)))
        bots.append(bot)
    async with run_relay(relay_test_config(htpasswd=str(htpasswd), ack_timeout=2.0)) as relay:
        client = AsyncClient(*bots, server=server_of(relay), org_name="org_acme", org_passwd="right")
        async with client:
            await ready(client)
            assert client.hook_urls()[apps[0].app_id] == f"{relay.url}/org_acme/{apps[0].app_id}"
            for app in apps:
                sim = make_sim(sims, app, f"{relay.url}/org_acme/{app.app_id}")
                assert (await sim.url_verification()).ok
                assert (await sim.send_text_message("hello org")).delivered
    assert seen == [(a.app_id, "hello org") for a in apps]


async def test_org_mode_with_a_wrong_password_is_refused_logged_and_retried(
    tmp_path: Path, sims: list[FeishuSimulator], caplog: pytest.LogCaptureFixture
) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("org_acme:" + bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4)).decode() + "\n")
    app = SimApp.random()
    bot = make_bot(app)
    received: list[Any] = []
    bot.on_event(received.append)
    caplog.set_level(logging.ERROR, logger="wslarkbot.client")
    async with (
        run_relay(relay_test_config(htpasswd=str(htpasswd))) as relay,
        AsyncClient(
            bot, server=server_of(relay), org_name="org_acme", org_passwd="wrong", auth_retry_delay=0.05
        ) as client,
    ):
        ok = await asyncio.to_thread(client.status.wait_for, lambda s: s.auth_failures >= 2, WAIT)
        assert ok, "keeps retrying after a refusal"
        result = await make_sim(sims, app, f"{relay.url}/org_acme/{app.app_id}").url_verification()
        assert not client.status.connected
    assert not result.ok
    assert received == [] and client.status.received == 0
    refusals = [r for r in caplog.records if "refused" in r.getMessage() and "org_acme" in r.getMessage()]
    assert refusals and all("wrong" not in r.getMessage() for r in refusals), "logged, without the password"


async def test_bot_added_while_running_gets_its_events(
    relay: RunningRelay, sims: list[FeishuSimulator]
) -> None:
    first, second = SimApp.random(), SimApp.random()
    async with AsyncClient(make_bot(first), server=server_of(relay), **FAST_RETRY) as client:
        await ready(client)
        client.add_bot(make_bot(second))
        await ready(client, hellos=2)
        result = await make_sim(sims, second, f"{relay.url}/hook/{second.app_id}").url_verification()
        assert result.ok, result.error
        assert (await make_sim(sims, first, f"{relay.url}/hook/{first.app_id}").url_verification()).ok


async def test_events_arrive_again_after_the_relay_restarts(sims: list[FeishuSimulator]) -> None:
    app = SimApp.random()
    config = relay_test_config()
    async with run_relay(config) as relay:
        port = relay.port
        client = AsyncClient(make_bot(app), server=f"127.0.0.1:{port}", **FAST_RETRY)
        runner = asyncio.ensure_future(client.run())
        await ready(client)
        assert (await make_sim(sims, app, f"{relay.url}/hook/{app.app_id}").url_verification()).ok
    # relay stopped (closes the socket); start a new one on the same port
    await asyncio.to_thread(client.status.wait_for, lambda s: not s.connected, WAIT)
    try:
        async with run_relay(config.replace(port=port)) as relay:
            await ready(client, hellos=2)
            assert (await make_sim(sims, app, f"{relay.url}/hook/{app.app_id}").url_verification()).ok
    finally:
        await client.stop()
        await runner
    assert client.status.connections == 2


async def test_forced_stop_does_not_wait_for_handlers_in_flight(
    relay: RunningRelay, sims: list[FeishuSimulator]
) -> None:
    app = SimApp.random()
    bot = make_bot(app)
    started, never = asyncio.Event(), asyncio.Event()

    @bot.on_card_action
    async def stuck(event: CardAction) -> dict[str, Any]:
        started.set()
        await never.wait()
        return {}

    client = AsyncClient(bot, server=server_of(relay), shutdown_grace=30.0)
    runner = asyncio.ensure_future(client.run())
    await ready(client)
    callback = asyncio.ensure_future(make_sim(sims, app, f"{relay.url}/hook/{app.app_id}").send_card_action())
    await asyncio.wait_for(started.wait(), WAIT)
    client.request_stop(force=True)
    await asyncio.wait_for(runner, 2.0)  # not shutdown_grace
    result = await asyncio.wait_for(callback, WAIT)
    assert not result.ok, "the stuck callback was never answered"


async def test_graceful_stop_waits_at_most_shutdown_grace_for_a_stuck_handler(
    relay: RunningRelay, sims: list[FeishuSimulator]
) -> None:
    """One grace period per stop, although both the open connection and run() wait for handlers."""
    app = SimApp.random()
    bot = make_bot(app)
    started, never = asyncio.Event(), asyncio.Event()

    @bot.on_card_action
    async def stuck(event: CardAction) -> dict[str, Any]:
        started.set()
        await never.wait()
        return {}

    grace = 1.0
    client = AsyncClient(bot, server=server_of(relay), shutdown_grace=grace)
    runner = asyncio.ensure_future(client.run())
    await ready(client)
    callback = asyncio.ensure_future(make_sim(sims, app, f"{relay.url}/hook/{app.app_id}").send_card_action())
    await asyncio.wait_for(started.wait(), WAIT)
    loop = asyncio.get_running_loop()
    stop_at = loop.time()
    client.request_stop()
    await asyncio.wait_for(runner, WAIT)
    took = loop.time() - stop_at
    assert grace <= took < 1.8 * grace, f"stopped after {took:.2f}s with shutdown_grace={grace}"
    assert not (await asyncio.wait_for(callback, WAIT)).ok


async def test_org_envelope_for_an_unknown_app_is_logged_and_not_answered(
    sims: list[FeishuSimulator], caplog: pytest.LogCaptureFixture
) -> None:
    known, unknown = SimApp.random(), SimApp.random()
    caplog.set_level(logging.WARNING, logger="wslarkbot.client")
    async with run_relay(relay_test_config(allow_anonymous_orgs=True)) as relay:
        client = AsyncClient(make_bot(known), server=server_of(relay), org_name="org_x")
        async with client:
            await ready(client)
            sim = make_sim(sims, unknown, f"{relay.url}/org_x/{unknown.app_id}")
            result = await sim.url_verification()
    assert not result.ok, "no reply and no ack: the relay gives up"
    assert client.status.unknown_app == 1 and client.status.replies == 0 and client.status.acks == 0
    request_id = sim.sent[0].request_id  # the relay keeps Feishu's X-Request-Id
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(unknown.app_id in m and request_id in m for m in warnings), warnings
