"""The dashboard in a real headless Chromium (Playwright driving Debian's /usr/bin/chromium).

The page is loaded with the admin credentials; a subscriber row appears once a bot connects, and a delivery
row (with its request id) appears live after a webhook. A screenshot goes to ``test-artifacts/`` (CI keeps
it as an artifact). Skipped when Playwright or the Chromium binary is missing; CI installs both
(``pip install playwright``, ``apt-get install chromium``; no ``playwright install`` download).
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from system_programs import CHROMIUM, mark
from wslarkbot.relay import run_relay
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import SIGNED, recv_json, test_config

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = pathlib.Path(__file__).resolve().parents[1] / "test-artifacts"
ADMIN = {"username": "admin", "password": "dashboard-test-password"}
EVENT = {"schema": "2.0", "header": {"event_type": "im.message.receive_v1", "event_id": "e1"}, "event": {}}
WAIT_MS = 10_000

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install playwright)"
)
pytestmark = mark("chromium")


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    config = test_config(admin_user=ADMIN["username"], admin_password=ADMIN["password"])
    async with run_relay(config) as r:
        yield r


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(
                http_credentials=ADMIN, viewport={"width": 1280, "height": 900}
            )
            yield await context.new_page()
        finally:
            await browser.close()


async def test_browser_sees_a_subscriber_and_a_delivery_appear_live(relay: RunningRelay, page: Any) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    response = await page.goto(f"{relay.url}/dashboard")
    assert response is not None and response.status == 200
    await page.wait_for_selector('#live[data-state="live"]', timeout=WAIT_MS)
    assert await page.locator("#subscribers tr").count() == 0

    async with connect(relay.ws_url("cli_demo", proto=2)) as ws, httpx.AsyncClient(timeout=5) as http:
        assert (await recv_json(ws))["type"] == "hello"
        row = await page.wait_for_selector("#subscribers tr[data-sub-id]", timeout=WAIT_MS)
        assert row is not None and "cli_demo" in await row.inner_text()

        answer = asyncio.ensure_future(
            http.post(
                f"{relay.url}/hook/cli_demo",
                content=json.dumps(EVENT).encode(),
                headers={**SIGNED, "X-Request-Id": "req-browser-1"},
            )
        )
        assert (await recv_json(ws))["headers"]["x-request-id"] == "req-browser-1"
        await ws.send(json.dumps({"type": "ack", "request_id": "req-browser-1"}))
        assert (await answer).status_code == 200

        delivery = await page.wait_for_selector(
            '#recent tr[data-request-id="req-browser-1"]', timeout=WAIT_MS
        )
        assert delivery is not None
        text = await delivery.inner_text()
        assert "cli_demo" in text and "200" in text and "ack-ws" in text
        await page.wait_for_selector("#channels tr[data-channel='cli_demo']", timeout=WAIT_MS)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert errors == []


async def test_browser_with_wrong_credentials_never_sees_the_page(relay: RunningRelay) -> None:
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(http_credentials={**ADMIN, "password": "wrong"})
            page = await context.new_page()
            try:
                response = await page.goto(f"{relay.url}/dashboard")
            except playwright_api.Error as exc:  # headless Chromium gives up after the second 401
                assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
            else:
                assert response is not None and response.status == 401
            assert await page.locator("#subscribers").count() == 0
        finally:
            await browser.close()


async def test_browser_opening_the_dashboard_with_credentials_in_the_url_goes_live(
    relay: RunningRelay,
) -> None:
    """``http://user:password@host/dashboard`` (issue 18): the page's own fetches must not carry the URL's
    credentials (fetch refuses them), and it still shows live data."""
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            host = relay.url.removeprefix("http://")
            response = await page.goto(f"http://{ADMIN['username']}:{ADMIN['password']}@{host}/dashboard/")
            assert response is not None and response.status == 200 and response.url.endswith("/dashboard")
            await page.wait_for_selector('#live[data-state="live"]', timeout=WAIT_MS)
            assert errors == []
        finally:
            await browser.close()
