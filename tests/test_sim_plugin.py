"""The simulator's pytest plugin fixtures and its link to FakeOpenAPI (card tokens for delayed updates)."""

from __future__ import annotations

import httpx
from aiohttp import web

import wslarkbot.sim as sim_pkg
from wslarkbot.sim import FakeOpenAPI, FeishuSimulator

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"


def test_sim_package_exports_what_all_lists():
    assert all(getattr(sim_pkg, name, None) is not None for name in sim_pkg.__all__)
    expected = {"SimApp", "FeishuSimulator", "SyncFeishuSimulator", "FakeOpenAPI", "payloads"}
    assert expected <= set(sim_pkg.__all__)


def test_sim_app_fixtures_differ_only_in_encryption(sim_app, sim_app_plain):
    assert sim_app.encrypt_key and sim_app_plain.encrypt_key is None
    assert sim_app.app_id != sim_app_plain.app_id


async def test_feishu_sim_factory_builds_a_scaled_simulator_for_sim_app(request, sim_app, feishu_sim_factory):
    plugin = request.config.pluginmanager.get_plugin("wslarkbot.sim.pytest_plugin")
    sim = feishu_sim_factory("http://127.0.0.1:9/webhook", event_timeout=0.5)
    assert isinstance(sim, FeishuSimulator)
    assert sim.app is sim_app and sim.event_timeout == 0.5
    assert sim.time_scale == plugin.TEST_TIME_SCALE == 0.001
    assert sim.callback_url == sim.card_url == "http://127.0.0.1:9/webhook"


def test_fake_openapi_fixture_knows_sim_app(sim_app, fake_openapi: FakeOpenAPI):
    answer = httpx.post(
        fake_openapi.url + TOKEN_PATH, json={"app_id": sim_app.app_id, "app_secret": sim_app.app_secret}
    ).json()
    assert answer["code"] == 0 and answer["tenant_access_token"].startswith("t-")


async def test_card_tokens_issued_through_fake_openapi_allow_two_delayed_updates(
    sim_app, fake_openapi, http_peer, feishu_sim_factory
):
    received: list[bytes] = []

    async def bot(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({})

    sim = feishu_sim_factory(callback_url=await http_peer(bot), openapi=fake_openapi)
    result = await sim.send_card_action({"k": 1})
    assert result.ok
    card_token = result.attempt.payload["event"]["token"]

    async with httpx.AsyncClient(base_url=fake_openapi.url) as client:
        token = (
            await client.post(TOKEN_PATH, json={"app_id": sim_app.app_id, "app_secret": sim_app.app_secret})
        ).json()["tenant_access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        update = {"token": card_token, "card": {"elements": []}}
        url = "/open-apis/interactive/v1/card/update"
        codes = [(await client.post(url, json=update, headers=headers)).json()["code"] for _ in range(3)]
    assert codes[:2] == [0, 0] and codes[2] != 0  # 2 uses per token (protocol.md §6c)
    assert len(received) == 1
