"""Subscription access rules: org channels need htpasswd credentials; --auth-apps; webhooks need none."""

from __future__ import annotations

import base64
import os
import pathlib
import subprocess
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from system_programs import require
from wslarkbot.exceptions import ConfigurationError
from wslarkbot.relay import create_app, run_relay
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import SIGNED, recv_json, test_config

EVENT = {"schema": "2.0", "header": {"event_type": "im.message.receive_v1", "event_id": "e"}, "event": {}}


def htpasswd_line(flag: str, user: str, password: str) -> str:
    """One entry made by Apache's real `htpasswd` command."""
    require("htpasswd")
    out = subprocess.run(["htpasswd", flag, user, password], check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture
def htpasswd_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "htpasswd"
    lines = [
        htpasswd_line("-nbB", "org_bcrypt", "pw-b"),
        htpasswd_line("-nbm", "org_apr1", "pw-m"),
        htpasswd_line("-nbs", "org_sha", "pw-s"),
        htpasswd_line("-nbp", "org_plain", "pw-p"),
        htpasswd_line("-nbB", "cli_app", "pw-app"),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    """200 if the WebSocket opened, else the HTTP status of the refusal."""
    try:
        async with connect(url, additional_headers=headers):
            return 200
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.fixture
async def relay(htpasswd_file: pathlib.Path) -> AsyncIterator[RunningRelay]:
    async with run_relay(test_config(htpasswd=str(htpasswd_file))) as r:
        yield r


@pytest.mark.parametrize(
    ("user", "password"), [("org_bcrypt", "pw-b"), ("org_apr1", "pw-m"), ("org_sha", "pw-s")]
)
async def test_htpasswd_entries_from_the_real_command_grant_their_org(
    relay: RunningRelay, user: str, password: str
) -> None:
    assert await status_of(relay.ws_url(user, proto=None), basic(user, password)) == 200


async def test_wrong_password_is_401_with_basic_challenge(relay: RunningRelay) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            relay.ws_url("org_bcrypt", proto=None), additional_headers=basic("org_bcrypt", "x")
        ):
            pass
    assert info.value.response.status_code == 401
    assert info.value.response.headers["WWW-Authenticate"] == 'Basic realm="wslarkbot"'


async def test_missing_credentials_for_org_channel_is_401(relay: RunningRelay) -> None:
    assert await status_of(relay.ws_url("org_bcrypt", proto=None)) == 401


async def test_plain_text_htpasswd_entry_is_refused(relay: RunningRelay) -> None:
    assert await status_of(relay.ws_url("org_plain", proto=None), basic("org_plain", "pw-p")) == 401


def test_plain_text_entry_is_logged_at_load(
    htpasswd_file: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    create_app(test_config(htpasswd=str(htpasswd_file)))
    assert any("org_plain" in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)
    assert not any("pw-p" in r.getMessage() for r in caplog.records)


async def test_credentials_of_another_org_are_403(relay: RunningRelay) -> None:
    assert await status_of(relay.ws_url("org_sha", proto=None), basic("org_apr1", "pw-m")) == 403


async def test_app_channels_need_no_auth_by_default(relay: RunningRelay) -> None:
    assert await status_of(relay.ws_url("cli_app", proto=None)) == 200


async def test_auth_apps_requires_credentials_for_app_channels(htpasswd_file: pathlib.Path) -> None:
    async with run_relay(test_config(htpasswd=str(htpasswd_file), auth_apps=True)) as relay:
        assert await status_of(relay.ws_url("cli_app", proto=None)) == 401
        assert await status_of(relay.ws_url("cli_app", proto=None), basic("cli_app", "nope")) == 401
        assert await status_of(relay.ws_url("cli_app", proto=None), basic("cli_app", "pw-app")) == 200


def test_auth_apps_without_htpasswd_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="--htpasswd"):
        create_app(test_config(auth_apps=True))


async def test_org_channel_without_htpasswd_is_403_unless_anonymous_orgs_allowed() -> None:
    async with run_relay(test_config()) as relay:
        assert await status_of(relay.ws_url("org_x", proto=None)) == 403
    async with run_relay(test_config(allow_anonymous_orgs=True)) as relay:
        assert await status_of(relay.ws_url("org_x", proto=None)) == 200


async def test_webhooks_to_org_routes_need_no_auth(relay: RunningRelay) -> None:
    async with connect(
        relay.ws_url("org_sha", proto=None), additional_headers=basic("org_sha", "pw-s")
    ) as ws:
        async with httpx.AsyncClient(timeout=5) as http:
            resp = await http.post(f"{relay.url}/org_sha/cli_z", json=EVENT, headers=SIGNED)
        env = await recv_json(ws)
    assert resp.status_code == 200
    assert env["headers"]["x-org-id"] == "org_sha"


async def test_htpasswd_is_reloaded_when_the_file_changes(htpasswd_file: pathlib.Path) -> None:
    async with run_relay(test_config(htpasswd=str(htpasswd_file))) as relay:
        assert await status_of(relay.ws_url("org_new", proto=None), basic("org_new", "pw-n")) == 401
        htpasswd_file.write_text(htpasswd_line("-nbs", "org_new", "pw-n") + "\n")
        stat = htpasswd_file.stat()
        os.utime(htpasswd_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert await status_of(relay.ws_url("org_new", proto=None), basic("org_new", "pw-n")) == 200
