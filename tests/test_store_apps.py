"""Store (marketplace) apps: the app_ticket flow and one tenant token per tenant (issue 20).

Everything real on loopback: the relay, the client, a store-app Bot, the simulator pushing events of two
tenants, the fake OpenAPI modelling Feishu's store-app token endpoints.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from e2e_helpers import WAIT, server_of
from fault_harness import wait_until
from wslarkbot import Bot
from wslarkbot.client import AsyncClient
from wslarkbot.events import MessageEvent
from wslarkbot.exceptions import ConfigurationError, FeishuAPIError
from wslarkbot.openapi import AsyncOpenAPIClient, OpenAPIClient
from wslarkbot.openapi.tickets import MemoryTicketStore, SQLiteTicketStore
from wslarkbot.openapi.token import NoAppTicket
from wslarkbot.relay.runner import RunningRelay, run_relay
from wslarkbot.relay.testing import test_config
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.feishu import FeishuSimulator
from wslarkbot.sim.openapi_server import FakeOpenAPI

pytestmark = pytest.mark.timeout(60)

TENANTS = ("tk_alpha", "tk_beta")


@pytest.fixture
def store_openapi() -> AsyncIterator[FakeOpenAPI]:
    with FakeOpenAPI() as api:
        api.add_store_app("cli_store", "store-secret", TENANTS)
        yield api


def test_a_store_app_without_a_ticket_says_so_and_tokens_follow_the_ticket(
    store_openapi: FakeOpenAPI,
) -> None:
    tickets = MemoryTicketStore()
    with OpenAPIClient(
        "cli_store", "store-secret", store_openapi.url, app_type="store", tickets=tickets
    ) as api:
        with pytest.raises(NoAppTicket, match="resend_app_ticket"):
            api.for_tenant("tk_alpha").tenant_access_token()
        with pytest.raises(ConfigurationError, match="for_tenant"):
            api.tenant_access_token()
        tickets.put("cli_store", store_openapi.issue_app_ticket("cli_store"))
        alpha = api.for_tenant("tk_alpha").tenant_access_token()
        beta = api.for_tenant("tk_beta").tenant_access_token()
        assert alpha != beta and alpha == api.for_tenant("tk_alpha").tenant_access_token()
        assert len(store_openapi.calls_to("/auth/v3/app_access_token")) == 1  # one app token for both
        with pytest.raises(FeishuAPIError):
            api.for_tenant("tk_gamma").tenant_access_token()  # not installed there


async def test_a_self_built_app_gets_its_app_access_token_and_not_a_store_token(
    store_openapi: FakeOpenAPI,
) -> None:
    store_openapi.add_app("cli_own", "own-secret")
    async with AsyncOpenAPIClient("cli_own", "own-secret", store_openapi.url) as api:
        token = await api.app_access_token()
    assert token.startswith("a-")
    (call,) = store_openapi.calls_to("/app_access_token/internal")
    assert call.json == {"app_id": "cli_own", "app_secret": "own-secret"}


def test_tickets_survive_a_restart_in_sqlite(tmp_path: object) -> None:
    path = str(tmp_path) + "/tickets.db"  # type: ignore[operator]
    first = SQLiteTicketStore(path)
    first.put("cli_a", "t1")
    first.put("cli_a", "t2")
    first.close()
    again = SQLiteTicketStore(path)
    assert again.get("cli_a") == "t2" and again.get("cli_b") is None
    again.close()


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    async with run_relay(test_config(ack_timeout=2.0)) as r:
        yield r


@pytest.mark.parametrize("handler", ["def", "async def"])
async def test_a_store_app_asks_for_its_ticket_then_replies_to_each_tenant_as_that_tenant(
    relay: RunningRelay, store_openapi: FakeOpenAPI, handler: str
) -> None:
    alpha = SimApp(
        app_id="cli_store",
        app_secret="store-secret",
        verification_token="vt",
        encrypt_key="ek",
        tenant_key=TENANTS[0],
    )
    beta = dataclasses.replace(alpha, tenant_key=TENANTS[1])
    url = f"{relay.url}/hook/{alpha.app_id}"
    loop = asyncio.get_running_loop()
    pushed: list[asyncio.Task[object]] = []

    async with FeishuSimulator(alpha, event_url=url) as sim_a, FeishuSimulator(beta, event_url=url) as sim_b:

        def push_ticket(app_id: str, ticket: str) -> None:  # Feishu pushes the ticket after a resend
            def start() -> None:
                pushed.append(loop.create_task(sim_a.send_app_ticket(ticket=ticket)))

            loop.call_soon_threadsafe(start)

        store_openapi.ticket_sink = push_ticket
        bot = Bot(
            alpha.app_id, alpha.app_secret, alpha.verification_token, alpha.encrypt_key,
            host=store_openapi.url, app_type="store",
        )  # fmt: skip

        def answer(event: MessageEvent) -> None:  # runs in the executor, as the event's tenant
            bot.reply_text(event.message_id, f"hello {event.tenant_key}")

        async def aanswer(event: MessageEvent) -> None:  # awaited on the client's loop, as its tenant
            await bot.async_api.reply_text(event.message_id, f"hello {event.tenant_key}")

        bot.on_text(answer if handler == "def" else aanswer)

        async with AsyncClient(bot, server=server_of(relay)) as client:
            ok = await asyncio.to_thread(client.status.wait_for, lambda s: s.connected and s.hellos, WAIT)
            assert ok
            await wait_until(lambda: bot.tickets.get(alpha.app_id) is not None, WAIT, "the app_ticket")
            assert len(store_openapi.calls_to("/app_ticket/resend")) == 1
            first = await sim_a.send_text_message("hi from alpha")
            second = await sim_b.send_text_message("hi from beta")
            assert first.ok and second.ok
            replies = await asyncio.to_thread(store_openapi.wait_for_calls, "/reply", 2, WAIT)
        await bot.aclose()
    by_tenant = {c.tenant_key: c.json["content"] for c in replies}
    assert by_tenant == {t: f'{{"text":"hello {t}"}}' for t in TENANTS}
    assert len(store_openapi.calls_to("/auth/v3/app_access_token")) == 1
