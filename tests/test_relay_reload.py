"""SIGHUP reloads a running relay (issue 21): the htpasswd file, limits and the gateway's apps change live;
the listening port waits for a restart; a bad configuration is refused whole."""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import signal
import sys

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from wslarkbot.relay.testing import SIGNED, ServeProcess, free_port

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"), pytest.mark.timeout(60)]


def sha_entry(user: str, password: str) -> str:
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    return f"{user}:{{SHA}}{digest}\n"


def auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def can_subscribe(node: ServeProcess, user: str, password: str) -> bool:
    try:
        async with connect(node.ws_url(user), additional_headers=auth(user, password)):
            return True
    except InvalidStatus as exc:
        assert exc.response.status_code == 401
        return False


async def reloaded(node: ServeProcess, times: int) -> None:
    """Send SIGHUP and wait for the reload's log line (the ``times``-th one)."""
    node.proc.send_signal(signal.SIGHUP)
    await node.wait_lines(r"configuration reload(ed|( refused))", times)


async def test_sighup_applies_a_new_htpasswd_and_limits_and_logs_what_needs_a_restart(
    tmp_path: pathlib.Path,
) -> None:
    first, second = tmp_path / "htpasswd-1", tmp_path / "htpasswd-2"
    first.write_text(sha_entry("org_a", "pw-a"))
    second.write_text(sha_entry("org_b", "pw-b"))
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(f'port = {port}\nhtpasswd = "{first}"\nretry_after = 5\n')
    node = await ServeProcess.start("--config", str(config))
    try:
        assert await can_subscribe(node, "org_a", "pw-a")
        config.write_text(f'port = {free_port()}\nhtpasswd = "{second}"\nretry_after = 9\n')
        await reloaded(node, 1)
        assert any(
            "configuration reloaded: htpasswd, retry_after; needs a restart: port" in line
            for line in node.lines
        )
        assert await can_subscribe(node, "org_b", "pw-b") and not await can_subscribe(node, "org_a", "pw-a")
        async with httpx.AsyncClient(timeout=5) as http:
            nobody = await http.post(f"{node.url}/hook/cli_nobody", json={"event": {}}, headers=SIGNED)
        assert nobody.status_code == 503 and nobody.headers["Retry-After"] == "9"
        assert node.port == port  # still listening where it started

        config.write_text("retry_after = = 1\n")  # broken: refused, the running configuration kept
        await reloaded(node, 2)
        assert any("configuration reload refused" in line for line in node.lines)
        assert await can_subscribe(node, "org_b", "pw-b")
    finally:
        assert await node.stop() == 0


async def test_sighup_rereads_the_gateway_apps(tmp_path: pathlib.Path) -> None:
    gateway = tmp_path / "gateway.json"

    def apps(*ids: str) -> None:
        entries = {app_id: {"app_secret": "s", "verification_token": "t"} for app_id in ids}
        gateway.write_text(json.dumps({"gateway": {}, "apps": entries}))

    apps("cli_gw_one")
    node = await ServeProcess.start("--port", "0", "--gateway-config", str(gateway))
    challenge = {"type": "url_verification", "challenge": "c", "token": "t"}
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            before = await http.post(f"{node.url}/hook/cli_gw_two", json=challenge)
            apps("cli_gw_two")
            await reloaded(node, 1)
            after = await http.post(f"{node.url}/hook/cli_gw_two", json=challenge)
            gone = await http.post(f"{node.url}/hook/cli_gw_one", json=challenge)
        assert before.status_code == 503  # not a gateway app yet: an ordinary channel with no subscriber
        assert (after.status_code, after.json()) == (200, {"challenge": "c"})
        assert gone.status_code == 503
        assert any("gateway config reloaded: 1 apps (added ['cli_gw_two'], removed ['cli_gw_one'])" in line
                   for line in node.lines)  # fmt: skip
    finally:
        assert await node.stop() == 0
