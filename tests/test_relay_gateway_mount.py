"""``wslarkbot serve --gateway-config``: the long-connection gateway mounted in the relay (its own tests cover
the protocol: tests/test_longconn_*.py)."""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from wslarkbot.relay.testing import SIGNED, ServeProcess

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

APP_ID = "cli_gateway_mount"
SECRET = "mount-secret"
TOKEN = "mount-token"


@pytest.fixture
async def node(tmp_path: pathlib.Path) -> AsyncIterator[ServeProcess]:
    config = tmp_path / "gateway.json"
    config.write_text(
        json.dumps(
            {
                "gateway": {"ping_interval": 5},
                "apps": {APP_ID: {"app_secret": SECRET, "verification_token": TOKEN}},
            }
        )
    )
    proc = await ServeProcess.start("--port", "0", "--gateway-config", str(config))
    yield proc
    assert await proc.stop() == 0


async def test_serve_with_gateway_config_answers_the_sdk_bootstrap_and_routes_its_webhooks(
    node: ServeProcess,
) -> None:
    """Bootstrap endpoint, the app's url_verification answered by the gateway, other apps untouched."""
    async with httpx.AsyncClient(timeout=5) as http:
        boot = (
            await http.post(f"{node.url}/callback/ws/endpoint", json={"AppID": APP_ID, "AppSecret": SECRET})
        ).json()
        wrong = (
            await http.post(f"{node.url}/callback/ws/endpoint", json={"AppID": APP_ID, "AppSecret": "x"})
        ).json()
        challenge = await http.post(
            f"{node.url}/hook/{APP_ID}", json={"type": "url_verification", "challenge": "c1", "token": TOKEN}
        )
        other = await http.post(f"{node.url}/hook/cli_not_gateway", json={"event": {}}, headers=SIGNED)
        status = (await http.get(f"{node.url}/status")).json()
    assert boot["code"] == 0
    assert boot["data"]["URL"].startswith(f"ws://127.0.0.1:{node.port}/callback/ws/v2?")
    assert boot["data"]["ClientConfig"]["PingInterval"] == 5
    assert wrong["code"] == 403
    assert (challenge.status_code, challenge.json()) == (200, {"challenge": "c1"})
    assert other.status_code == 503 and "no subscriber" in other.json()["msg"]
    assert status["gateway"] == {APP_ID: 0}
