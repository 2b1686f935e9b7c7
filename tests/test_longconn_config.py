"""Gateway config files and one-time connection tickets."""

from __future__ import annotations

import json
import pathlib

import pytest

from wslarkbot.exceptions import ConfigurationError
from wslarkbot.relay.longconn.config import GatewayApp, GatewayConfig, hash_secret, load_gateway_config
from wslarkbot.relay.longconn.tickets import TicketBook, TicketError, TicketExpired

TOML = """
[gateway]
ping_interval = 30
fragment_bytes = 16384

[apps.cli_a]
app_secret_sha256 = "{digest}"
encrypt_key = "ek-secret"
verification_token = "vt-secret"
max_connections = 200
delivery = "broadcast"

[apps.cli_b]
app_secret = "dev-secret"
verification_token = "vt-b"
"""


def test_toml_config_loads_apps_and_knobs(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(TOML.format(digest=hash_secret("prod-secret")))
    config = load_gateway_config(path)
    a, b = config.apps["cli_a"], config.apps["cli_b"]
    assert (a.max_connections, a.delivery, b.max_connections, b.delivery) == (200, "broadcast", 50, "one")
    assert a.secret_matches("prod-secret") and not a.secret_matches("prod-secret ")
    assert b.secret_matches("dev-secret")
    assert config.fragment_bytes == 16384
    assert config.client_config() == {
        "ReconnectCount": -1,
        "ReconnectInterval": 120,
        "ReconnectNonce": 30,
        "PingInterval": 30,
    }


def test_json_config_loads(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps({"apps": {"cli_x": {"app_secret": "s", "encrypt_key": "k"}}}))
    assert load_gateway_config(path).apps["cli_x"].encrypt_key == "k"


def test_secrets_never_appear_in_repr(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(TOML.format(digest=hash_secret("prod-secret")))
    text = repr(load_gateway_config(path))
    for secret in (
        "ek-secret",
        "vt-secret",
        "dev-secret",
        hash_secret("prod-secret"),
        hash_secret("dev-secret"),
    ):
        assert secret not in text


@pytest.mark.parametrize(
    "data",
    [
        {"apps": {"cli_a": {"encrypt_key": "k"}}},  # no secret
        {"apps": {"cli_a": {"app_secret": "s"}}},  # neither encrypt key nor token
        {"apps": {"cli_a": {"app_secret": "s", "encrypt_key": "k", "delivery": "all"}}},
        {"apps": {"cli_a": {"app_secret": "s", "encrypt_key": "k", "max_connections": 0}}},
        {"apps": {"cli_a": {"app_secret": "s", "encrypt_key": "k", "colour": "red"}}},
        {"apps": {"cli_a": {"app_secret_sha256": "abc", "encrypt_key": "k"}}},
        {"gateway": {"fragment_bytes": 2_000_000}},
        {"gateway": {"nope": 1}},
        {"other": {}},
    ],
)
def test_invalid_configs_are_refused(tmp_path: pathlib.Path, data: dict) -> None:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError):
        load_gateway_config(path)


def test_parse_errors_do_not_quote_the_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[apps.cli_a]\napp_secret = "leaky-secret\n')
    with pytest.raises(ConfigurationError) as info:
        load_gateway_config(path)
    assert "leaky" not in str(info.value) and info.value.__cause__ is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ticket_is_single_use() -> None:
    book = TicketBook(60, clock=FakeClock())
    device_id, token = book.issue("cli_a")
    ticket = book.redeem(token)
    assert (ticket.app_id, ticket.device_id) == ("cli_a", device_id)
    with pytest.raises(TicketExpired):
        book.redeem(token)


def test_ticket_expires() -> None:
    clock = FakeClock()
    book = TicketBook(60, clock=clock)
    _, token = book.issue("cli_a")
    clock.now += 61
    with pytest.raises(TicketExpired):
        book.redeem(token)


@pytest.mark.parametrize(
    "mangle",
    [lambda t: t[:-2] + ("AB" if t[-2:] != "AB" else "BA"), lambda t: "x" + t, lambda t: "", lambda t: "a.b"],
)
def test_forged_tickets_are_refused(mangle: object) -> None:
    book = TicketBook(60)
    _, token = book.issue("cli_a")
    with pytest.raises(TicketError) as info:
        book.redeem(mangle(token))  # type: ignore[operator]
    assert not isinstance(info.value, TicketExpired)


def test_tickets_from_another_process_key_are_refused() -> None:
    _, token = TicketBook(60).issue("cli_a")
    with pytest.raises(TicketError):
        TicketBook(60).redeem(token)


def test_app_requires_hex_digest() -> None:
    with pytest.raises(ConfigurationError):
        GatewayApp(app_id="a", app_secret_sha256="ZZ" * 32, encrypt_key="k")
    assert GatewayConfig().apps == {}


def test_replay_and_ticket_secret_knobs(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '[gateway]\nticket_secret = "0123456789abcdef-shared"\n'
        '[apps.cli_r]\napp_secret = "s"\nverification_token = "t"\n'
        "replay = true\nreplay_size = 5\nreplay_ttl = 30\n"
    )
    config = load_gateway_config(path)
    app = config.apps["cli_r"]
    assert (app.replay, app.replay_size, app.replay_ttl) == (True, 5, 30)
    assert "0123456789abcdef" not in repr(config)
    with pytest.raises(ConfigurationError, match="replay_size"):
        GatewayApp(app_id="a", app_secret_sha256=hash_secret("s"), verification_token="t", replay_size=0)


def test_tickets_with_a_shared_secret_validate_in_another_process() -> None:
    from wslarkbot.relay.longconn.tickets import key_from_secret

    secret = "0123456789abcdef-shared"
    _, token = TicketBook(60, key=key_from_secret(secret)).issue("cli_a")
    ticket = TicketBook(60, key=key_from_secret(secret)).verify(token)
    assert ticket.app_id == "cli_a"
    with pytest.raises(TicketError):
        TicketBook(60, key=key_from_secret(secret + "x")).verify(token)
