"""End to end against the REAL original relay: nginx + nchan + Lua with the config of ``deploy/nchan/``.

Feishu (simulator) -> nginx/nchan -> our ``Client``/``AsyncClient`` -> Bot -> ``POST /sub/<request_id>``
-> nchan -> Feishu, and Bot -> fake OpenAPI. nginx is started by ``tests/nchan_server.py`` on a free port
(the test is skipped, with the reason, when nginx/nchan/lua are not installed). No relay of ours is
involved: nchan sends no hello, so the client runs the original protocol (protocol 1: replies by HTTP POST,
no acks, nothing but heartbeats on the socket).

What the nchan config answers (deploy/nchan/webhook.lua): a request WITHOUT ``X-Lark-Signature`` waits for
the bot's reply (url_verification; v2 callbacks of an app without an Encrypt Key); a signed one (every
event, legacy card callbacks, callbacks of an app with an Encrypt Key) is answered 200 as soon as it is
published, so its handler's response cannot reach Feishu through nchan.

A subscription is live when nchan counts it (``wait_for_subscribers``); the client's ``wait_ready`` would
wait for the first envelope here, since the protocol is only known then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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
from nchan_server import (  # noqa: F401  (nchan_relay_fixture registers the `nchan_relay` fixture)
    NchanRelay,
    missing_requirements,
    nchan_relay_fixture,
    running_nchan,
)
from system_programs import require
from wslarkbot.bot import Bot
from wslarkbot.client import AsyncClient, Client
from wslarkbot.events import CardAction, MessageEvent
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.feishu import FeishuSimulator, SyncFeishuSimulator
from wslarkbot.sim.openapi_server import FakeOpenAPI

# -- helpers ------------------------------------------------------------------------------------------


class Inbox:
    """What handlers received, awaitable from any thread. Needed here because nchan answers an event
    200 when it is published, before the bot has handled it (our relay waits for the ack)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: list[tuple[str, str | None]] = []

    def add(self, app_id: str, text: str | None) -> None:
        with self._cond:
            self.items.append((app_id, text))
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> list[tuple[str, str | None]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= count, timeout), self.items
            return list(self.items)

    async def await_for(self, count: int) -> list[tuple[str, str | None]]:
        return await asyncio.to_thread(self.wait_for, count)


async def subscribed(client: AsyncClient, relay: NchanRelay, *, connections: int = 1) -> None:
    """Wait until the client has opened its ``connections``-th connection and nchan counts exactly one
    subscriber (a multiplexed ``/sub/a,b`` is one subscriber)."""
    ok = await asyncio.to_thread(
        client.status.wait_for, lambda s: s.connected and s.connections >= connections, WAIT
    )
    assert ok, f"client not connected: {client.status!r}"
    await asyncio.to_thread(relay.wait_for_subscribers, 1, WAIT)


async def published(relay: NchanRelay) -> int:
    """nchan's ``total published messages``: webhook events, replies, and any non-PING frame a
    subscriber sends (the config publishes those to a channel nobody reads)."""
    status = await asyncio.to_thread(relay.status)
    return int(status["total published messages"])


# -- the original protocol, through real nchan ---------------------------------------------------------


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
async def test_challenge_through_nchan_is_answered_within_one_second(
    nchan_relay: NchanRelay, sims: list[FeishuSimulator], encrypted: bool
) -> None:
    app = SimApp.random(encrypt=encrypted)
    async with AsyncClient(make_bot(app), server=server_of(nchan_relay)) as client:
        await subscribed(client, nchan_relay)
        result = await make_sim(sims, app, f"{nchan_relay.url}/hook/{app.app_id}").url_verification()
        assert client.status.protocol == 1, "no hello from nchan: original protocol"
    assert result.ok, result.error
    assert result.elapsed < 1.0
    assert client.status.replies == 1 and client.status.dropped == 0


async def test_encrypted_text_message_through_nchan_reaches_bot_and_its_reply_reaches_openapi(
    nchan_relay: NchanRelay, openapi: FakeOpenAPI, sims: list[FeishuSimulator]
) -> None:
    app = SimApp.random()
    bot = make_bot(app, openapi)

    @bot.on_text
    def echo(event: MessageEvent) -> None:
        bot.reply_text(event.message_id, "echo: " + (event.text or ""))

    async with AsyncClient(bot, server=server_of(nchan_relay)) as client:
        await subscribed(client, nchan_relay)
        before = await published(nchan_relay)
        sim = make_sim(sims, app, f"{nchan_relay.url}/hook/{app.app_id}")
        result = await sim.send_text_message("你好 nchan", message_id="om_nchan1")
        calls = await asyncio.to_thread(openapi.wait_for_calls, "/im/v1/messages/om_nchan1/reply", 1, WAIT)
    # The block's end is a graceful stop: the handler has finished and the socket is closed, so any
    # frame the client sent has reached nchan before the count below.
    assert result.delivered and result.retries == 0
    assert calls[0].json["msg_type"] == "text"
    assert "echo: 你好 nchan" in calls[0].json["content"]
    assert await published(nchan_relay) == before + 1, "only the event: no ack or reply frame from the client"
    assert client.status.acks == 0 and client.status.replies == 0 and client.status.dropped == 0


async def test_unsigned_event_through_nchan_is_answered_at_once_so_feishu_does_not_retry(
    nchan_relay: NchanRelay, sims: list[FeishuSimulator]
) -> None:
    """An app without an Encrypt Key gets unsigned events; nchan holds those open for a reply (1 s)
    as if they were challenges. The client POSTs ``{}`` on receipt, before the (slow) handler ends."""
    app = SimApp.random(encrypt=False)
    bot = make_bot(app)
    inbox = Inbox()
    gate = threading.Event()

    @bot.on_text
    def slow(event: MessageEvent) -> None:
        gate.wait(WAIT)  # longer than nchan's 1 s wait
        inbox.add(app.app_id, event.text)

    try:
        async with AsyncClient(bot, server=server_of(nchan_relay)) as client:
            await subscribed(client, nchan_relay)
            sim = make_sim(sims, app, f"{nchan_relay.url}/hook/{app.app_id}")
            result = await sim.send_text_message("no encrypt key")
            assert not result.attempts[0].headers.get("X-Lark-Signature"), "Feishu did not sign it"
            assert result.delivered and result.retries == 0, result
            assert inbox.items == [], "answered while the handler still runs"
            gate.set()
            assert await inbox.await_for(1) == [(app.app_id, "no encrypt key")]
    finally:
        gate.set()
    assert client.status.acks == 1 and client.status.replies == 0


async def test_unencrypted_card_callback_response_through_nchan_reaches_feishu(
    nchan_relay: NchanRelay, sims: list[FeishuSimulator]
) -> None:
    # Without an Encrypt Key Feishu does not sign a v2 callback, so nchan waits for the reply.
    app = SimApp.random(encrypt=False)
    bot = make_bot(app)

    @bot.on_card_action
    async def clicked(event: CardAction) -> dict[str, Any]:
        return {"toast": {"type": "success", "content": f"got {event.value['n']}"}}

    async with AsyncClient(bot, server=server_of(nchan_relay)) as client:
        await subscribed(client, nchan_relay)
        result = await make_sim(sims, app, f"{nchan_relay.url}/hook/{app.app_id}").send_card_action({"n": 7})
    assert result.ok, (result.error_code, result.error)
    assert result.response == {"toast": {"type": "success", "content": "got 7"}}
    assert client.status.replies == 1


async def test_org_mode_through_nchan_with_the_right_password_dispatches_by_app_id(
    nchan_relay: NchanRelay, sims: list[FeishuSimulator]
) -> None:
    await asyncio.to_thread(nchan_relay.add_user, "org_acme", "right")
    apps = [SimApp.random(), SimApp.random(encrypt=False)]
    inbox = Inbox()
    bots = []
    for app in apps:
        bot = make_bot(app)
        bot.on_text(lambda event, app_id=app.app_id: inbox.add(app_id, event.text))
        bots.append(bot)
    client = AsyncClient(*bots, server=server_of(nchan_relay), org_name="acme", org_passwd="right")
    async with client:
        await subscribed(client, nchan_relay)
        assert client.hook_urls()[apps[0].app_id] == f"{nchan_relay.url}/org_acme/{apps[0].app_id}"
        for app in apps:
            sim = make_sim(sims, app, f"{nchan_relay.url}/org_acme/{app.app_id}")
            challenge = await sim.url_verification()
            assert challenge.ok and challenge.elapsed < 1.0, challenge.error
            assert (await sim.send_text_message("hello org")).delivered
        seen = await inbox.await_for(len(apps))
    assert sorted(seen) == sorted((a.app_id, "hello org") for a in apps)
    assert client.status.auth_failures == 0 and client.status.connections == 1


async def test_org_mode_through_nchan_with_a_wrong_password_is_refused_logged_and_retried(
    nchan_relay: NchanRelay, sims: list[FeishuSimulator], caplog: pytest.LogCaptureFixture
) -> None:
    await asyncio.to_thread(nchan_relay.add_user, "org_acme", "right")
    app = SimApp.random()
    bot = make_bot(app)
    received: list[Any] = []
    bot.on_event(received.append)
    caplog.set_level(logging.ERROR, logger="wslarkbot.client")
    client = AsyncClient(
        bot, server=server_of(nchan_relay), org_name="org_acme", org_passwd="wrong", auth_retry_delay=0.05
    )
    async with client:
        ok = await asyncio.to_thread(client.status.wait_for, lambda s: s.auth_failures >= 2, WAIT)
        assert ok, "keeps retrying after nginx's 401"
        result = await make_sim(sims, app, f"{nchan_relay.url}/org_acme/{app.app_id}").url_verification()
        assert not client.status.connected
    assert not result.ok and result.status == 503, "no subscriber: the webhook says 503"
    assert received == [] and client.status.received == 0 and client.status.connections == 0
    assert "HTTP 401" in client.status.last_error
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals and all("org_acme" in m and "wrong" not in m for m in refusals), refusals


async def test_two_bots_share_one_nchan_subscription(
    nchan_relay: NchanRelay, sims: list[FeishuSimulator]
) -> None:
    apps = [SimApp.random(), SimApp.random(encrypt=False)]
    inbox = Inbox()
    bots = []
    for app in apps:
        bot = make_bot(app)
        bot.on_text(lambda event, app_id=app.app_id: inbox.add(app_id, event.text))
        bots.append(bot)
    async with AsyncClient(bots[0], bots=[bots[1]], server=server_of(nchan_relay)) as client:
        await subscribed(client, nchan_relay)  # one subscriber for /sub/<app1>,<app2>
        for app in apps:
            sim = make_sim(sims, app, f"{nchan_relay.url}/hook/{app.app_id}")
            assert (await sim.url_verification()).ok
            assert (await sim.send_text_message(f"to {app.app_id}")).delivered
        seen = await inbox.await_for(len(apps))
    assert sorted(seen) == sorted((a.app_id, f"to {a.app_id}") for a in apps)
    assert client.status.connections == 1 and client.status.replies == 2


def test_blocking_client_answers_through_nchan_and_stops_from_another_thread(nchan_relay: NchanRelay) -> None:
    app = SimApp.random()
    bot = Bot(app.app_id, app.app_secret, app.verification_token, app.encrypt_key)
    inbox = Inbox()
    bot.on_text(lambda event: inbox.add(app.app_id, event.text))
    client = Client(bot, server=server_of(nchan_relay))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            client.start()
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert client.status.wait_for(lambda s: s.connected, WAIT)
        nchan_relay.wait_for_subscribers(1, WAIT)
        with SyncFeishuSimulator(app, event_url=f"{nchan_relay.url}/hook/{app.app_id}") as sim:
            challenge = sim.url_verification()
            assert challenge.ok and challenge.elapsed < 1.0, challenge.error
            assert sim.send_text_message("blocking").delivered
        assert inbox.wait_for(1) == [(app.app_id, "blocking")]
    finally:
        assert client.stop(WAIT)
        thread.join(WAIT)
    assert not thread.is_alive() and errors == []


# -- nginx restarted or frozen under a connected client -----------------------------------------------


class RestartableNchan:
    """nginx + nchan that can be stopped and started again on the same port and prefix.

    Workaround: the ``nchan_relay`` fixture has no restart (its teardown stops the process it started
    itself), so this drives ``running_nchan`` directly, entering and leaving it in a thread (it blocks).
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self._cm: contextlib.AbstractContextManager[NchanRelay] | None = None

    async def start(self) -> NchanRelay:
        assert self._cm is None
        self._cm = running_nchan(self.workdir, port=self.port)
        relay = await asyncio.to_thread(self._cm.__enter__)
        self.port = relay.port
        return relay

    async def stop(self) -> None:
        """SIGTERM to the master (nginx's fast shutdown: open WebSockets are cut, no close frame)."""
        cm, self._cm = self._cm, None
        if cm is not None:
            await asyncio.to_thread(cm.__exit__, None, None, None)


@pytest.fixture
async def restartable(tmp_path: Path) -> AsyncIterator[RestartableNchan]:
    require("nginx+nchan")
    nginx = RestartableNchan(tmp_path / "nchan")
    try:
        yield nginx
    finally:
        await nginx.stop()


async def test_next_event_arrives_after_nginx_restarts_on_the_same_port(
    restartable: RestartableNchan, sims: list[FeishuSimulator]
) -> None:
    app = SimApp.random()
    bot = make_bot(app)
    inbox = Inbox()
    bot.on_text(lambda event: inbox.add(app.app_id, event.text))
    relay = await restartable.start()
    async with AsyncClient(bot, server=server_of(relay), **FAST_RETRY) as client:
        await subscribed(client, relay)
        assert (
            await make_sim(sims, app, f"{relay.url}/hook/{app.app_id}").send_text_message("before")
        ).delivered
        await inbox.await_for(1)

        await restartable.stop()
        assert await asyncio.to_thread(client.status.wait_for, lambda s: not s.connected, WAIT)
        relay = await restartable.start()  # same port, same prefix and htpasswd

        await subscribed(client, relay, connections=2)
        assert (
            await make_sim(sims, app, f"{relay.url}/hook/{app.app_id}").send_text_message("after")
        ).delivered
        seen = await inbox.await_for(2)
    assert seen == [(app.app_id, "before"), (app.app_id, "after")]
    assert client.status.connections == 2 and client.status.failures >= 1


async def test_frozen_nchan_worker_is_detected_by_websocket_pings_and_the_client_reconnects(
    nchan_relay: NchanRelay, sims: list[FeishuSimulator]
) -> None:
    """The client sends only RFC 6455 ping frames (no text PING): nchan answers them, so a worker that
    stops answering (SIGSTOP: the TCP connection stays up, nothing is read) is noticed within
    ``ping_interval + ping_timeout + close_timeout``, without any close frame or TCP reset."""
    app = SimApp.random()
    (worker,) = nchan_relay.worker_pids()
    assert worker != nchan_relay.process.pid, "a worker process, not the master"
    client = AsyncClient(
        make_bot(app),
        server=server_of(nchan_relay),
        ping_interval=0.2,
        ping_timeout=0.5,
        close_timeout=0.5,  # the frozen relay never completes the closing handshake
        open_timeout=2.0,
        **FAST_RETRY,
    )
    async with client:
        await subscribed(client, nchan_relay)
        os.kill(worker, signal.SIGSTOP)
        try:
            lost = await asyncio.to_thread(client.status.wait_for, lambda s: s.failures >= 1, WAIT)
            assert lost, "a frozen relay must not look alive"
            assert "no pong from the relay" in client.status.last_error, client.status.last_error
        finally:
            os.kill(worker, signal.SIGCONT)
        await subscribed(client, nchan_relay, connections=2)
        result = await make_sim(sims, app, f"{nchan_relay.url}/hook/{app.app_id}").url_verification()
    assert result.ok, result.error
