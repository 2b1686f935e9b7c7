"""``GET /dashboard`` and its JSON API over real HTTP: admin basic auth, and metadata-only live data."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect

from wslarkbot.exceptions import ConfigurationError
from wslarkbot.relay import RelayConfig, create_app, run_relay
from wslarkbot.relay.app import STATE_KEY
from wslarkbot.relay.hub import Subscriber
from wslarkbot.relay.observe import Observers, RelayObserver
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import SIGNED, recv_json, test_config

ADMIN = ("admin", "correct horse battery staple")
SECRET_TEXT = "do-not-show-this-body-text"
EVENT = {
    "schema": "2.0",
    "header": {"event_type": "im.message.receive_v1", "event_id": "e1"},
    "event": {"message": {"content": SECRET_TEXT}},
}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    async with run_relay(test_config(admin_user=ADMIN[0], admin_password=ADMIN[1])) as r:
        yield r


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/api", "/dashboard/static/dashboard.js"])
async def test_dashboard_without_credentials_is_401_with_a_basic_challenge(
    relay: RunningRelay, http: httpx.AsyncClient, path: str
) -> None:
    resp = await http.get(relay.url + path)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith('Basic realm="wslarkbot admin"')


@pytest.mark.parametrize(
    "user,password", [("admin", "wrong"), ("root", ADMIN[1]), ("", ""), ("admin", ADMIN[1] + "x")]
)
async def test_dashboard_with_wrong_credentials_is_401(
    relay: RunningRelay, http: httpx.AsyncClient, user: str, password: str
) -> None:
    resp = await http.get(f"{relay.url}/dashboard", headers=basic(user, password))
    assert resp.status_code == 401


async def test_dashboard_with_the_admin_credentials_serves_a_self_contained_page(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    page = await http.get(f"{relay.url}/dashboard", headers=basic(*ADMIN))
    script = await http.get(f"{relay.url}/dashboard/static/dashboard.js", headers=basic(*ADMIN))
    style = await http.get(f"{relay.url}/dashboard/static/dashboard.css", headers=basic(*ADMIN))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert 'id="subscribers"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assert script.status_code == 200 and "dashboard/api" in script.text
    assert ".innerHTML" not in script.text
    assert style.status_code == 200


async def test_dashboard_serves_only_its_own_assets(relay: RunningRelay, http: httpx.AsyncClient) -> None:
    for name in ("..%2Fconfig.py", "dashboard.html.bak", "admin.py"):
        resp = await http.get(f"{relay.url}/dashboard/static/{name}", headers=basic(*ADMIN))
        assert resp.status_code == 404, name


async def test_dashboard_api_lists_a_subscriber_and_a_recent_delivery_without_its_body(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    async with connect(relay.ws_url("cli_a", proto=2)) as ws:
        assert (await recv_json(ws))["type"] == "hello"
        answer = asyncio.ensure_future(
            http.post(
                f"{relay.url}/hook/cli_a",
                content=json.dumps(EVENT).encode(),
                headers={**SIGNED, "X-Request-Id": "req-dash-1"},
            )
        )
        assert (await recv_json(ws))["headers"]["x-request-id"] == "req-dash-1"
        await ws.send(json.dumps({"type": "ack", "request_id": "req-dash-1"}))
        assert (await answer).status_code == 200
        resp = await http.get(f"{relay.url}/dashboard/api", headers=basic(*ADMIN))

    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert SECRET_TEXT not in resp.text
    data = resp.json()
    [sub] = data["subscribers"]
    assert sub["channels"] == ["cli_a"]
    assert sub["protocol"] == 2
    assert sub["peer"].startswith("127.0.0.1")
    assert sub["connected_since"] <= data["now"]
    assert sub["last_ack"] is not None and sub["answers"] == 1
    [delivery] = data["recent"]
    assert delivery["request_id"] == "req-dash-1"
    assert delivery["channel"] == "cli_a"
    assert delivery["status"] == 200
    assert delivery["outcome"] == "ack-ws"
    assert delivery["latency_ms"] >= 0
    assert set(delivery) == {
        "time",
        "channel",
        "request_id",
        "kind",
        "status",
        "outcome",
        "latency_ms",
        "delivered",
    }
    [channel] = data["channels"]
    assert channel == {
        **channel,
        "name": "cli_a",
        "kind": "hook",
        "subscribers": 1,
        "received": 1,
        "failed": 0,
    }
    assert data["totals"] == {"received": 1, "delivered": 1, "acked": 1, "failed": 0}
    assert data["rates"]["received"] > 0


class DisconnectWatch(RelayObserver):
    """A test observer: an event set when a subscriber's disconnect has been observed."""

    def __init__(self) -> None:
        self.disconnected = asyncio.Event()

    def subscriber_disconnected(self, sub: Subscriber, close_code: int | None) -> None:
        self.disconnected.set()


async def test_dashboard_api_forgets_a_subscriber_once_it_disconnects(
    relay: RunningRelay, http: httpx.AsyncClient
) -> None:
    state = relay.app[STATE_KEY]
    watch = DisconnectWatch()
    state.observer = Observers((state.observer, watch))
    async with connect(relay.ws_url("cli_a", proto=2)) as ws:
        await recv_json(ws)
        before = (await http.get(f"{relay.url}/dashboard/api", headers=basic(*ADMIN))).json()
    await asyncio.wait_for(watch.disconnected.wait(), 5)
    after = (await http.get(f"{relay.url}/dashboard/api", headers=basic(*ADMIN))).json()
    assert [s["channels"] for s in before["subscribers"]] == [["cli_a"]]
    assert after["subscribers"] == []
    assert after["gauges"]["subscribers"] == 0


async def test_dashboard_is_off_without_admin_credentials(http: httpx.AsyncClient) -> None:
    async with run_relay(test_config()) as relay:
        resp = await http.get(f"{relay.url}/dashboard", headers=basic(*ADMIN))
    assert resp.status_code == 404
    assert "--admin-user" in resp.json()["msg"]


async def test_dashboard_accepts_an_htpasswd_hash_as_the_admin_password(http: httpx.AsyncClient) -> None:
    import bcrypt

    hashed = bcrypt.hashpw(ADMIN[1].encode(), bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    async with run_relay(test_config(admin_user=ADMIN[0], admin_password=hashed)) as relay:
        ok = await http.get(f"{relay.url}/dashboard/api", headers=basic(*ADMIN))
        again = await http.get(f"{relay.url}/dashboard/api", headers=basic(*ADMIN))
        wrong = await http.get(f"{relay.url}/dashboard/api", headers=basic(ADMIN[0], hashed))
    assert (ok.status_code, again.status_code, wrong.status_code) == (200, 200, 401)


@pytest.mark.parametrize(
    "changes",
    [{"admin_user": "admin"}, {"admin_password": "pw"}, {"metrics_auth": True}],
    ids=["user-only", "password-only", "metrics-auth-without-admin"],
)
def test_inconsistent_admin_options_are_a_configuration_error(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        create_app(RelayConfig(**changes))  # type: ignore[arg-type]


def test_admin_password_is_not_in_the_config_repr() -> None:
    assert ADMIN[1] not in repr(RelayConfig(admin_user="admin", admin_password=ADMIN[1]))


async def test_refused_admin_login_is_logged_without_the_password(
    relay: RunningRelay, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="wslarkbot.relay.admin"):
        await http.get(f"{relay.url}/dashboard", headers=basic("admin", "guess-123"))
    assert "admin auth refused" in caplog.text
    assert "guess-123" not in caplog.text
