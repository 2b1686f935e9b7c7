"""``wslarkbot serve --log-json``: one JSON object per stderr line; webhook lines carry the request id."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from wslarkbot.relay.testing import SIGNED, ServeProcess

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

PASSWORD = "log-test-admin-password"


@pytest.fixture
async def node() -> AsyncIterator[ServeProcess]:
    proc = await ServeProcess.start(
        "--port",
        "0",
        "--log-json",
        "--admin-user",
        "admin",
        env={"WSLARKBOT_ADMIN_PASSWORD": PASSWORD},
    )
    try:
        yield proc
    finally:
        await proc.stop()


async def test_log_json_lines_parse_and_the_webhook_line_carries_its_request_id(node: ServeProcess) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        resp = await http.post(
            f"{node.url}/hook/cli_logged",
            content=b'{"schema":"2.0"}',
            headers={**SIGNED, "X-Request-Id": "req-json-1"},
        )
    assert resp.status_code == 503  # nobody subscribed
    await node.wait_line("req-json-1")
    records = [json.loads(line) for line in node.lines]  # every line is JSON
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    [webhook] = [r for r in records if r.get("request_id") == "req-json-1"]
    assert webhook["logger"] == "wslarkbot.relay"
    assert webhook["level"] == "INFO"
    assert webhook["channel"] == "cli_logged"
    assert webhook["status"] == 503
    assert isinstance(webhook["latency_ms"], float)
    assert webhook["ts"].endswith("Z")
    assert "request_id=req-json-1" in webhook["msg"]  # the text stays readable too


async def test_log_json_never_contains_the_admin_password(node: ServeProcess) -> None:
    wrong = base64.b64encode(b"admin:" + PASSWORD.encode() + b"-typo").decode()
    async with httpx.AsyncClient(timeout=5) as http:
        refused = await http.get(f"{node.url}/dashboard", headers={"Authorization": f"Basic {wrong}"})
    assert refused.status_code == 401
    line = await node.wait_line("admin auth refused")
    assert json.loads(line.string)["level"] == "WARNING"
    await node.stop()
    assert all(PASSWORD not in line for line in node.lines)


async def test_a_percent_encoded_newline_in_a_path_cannot_forge_a_log_line() -> None:
    """Issue 19: what a peer sends is logged with its control characters escaped (text logs)."""
    import httpx

    from wslarkbot.relay.testing import ServeProcess

    node = await ServeProcess.start("--port", "0")
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            resp = await http.post(f"{node.url}/sub/abc%0A2026-01-01 00:00:00,000 INFO forged", json={})
        assert resp.status_code == 400
        line = (await node.wait_line(r"rejected POST /sub/abc")).string
    finally:
        await node.stop()
    assert "abc\\n2026-01-01" in line
    assert not any(other.startswith("2026-01-01 00:00:00,000 INFO forged") for other in node.lines)
