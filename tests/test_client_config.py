"""The client's addressing rules and reconnect policy: no I/O."""

from __future__ import annotations

import base64
import itertools
import random

import pytest

from wslarkbot.client import backoff
from wslarkbot.client.backoff import constant
from wslarkbot.client.config import resolve_endpoint
from wslarkbot.exceptions import ConfigurationError

# -- endpoint ---------------------------------------------------------------------------------------


def test_missing_server_raises_configuration_error_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="WSLARKBOT_SERVER"):
        resolve_endpoint(None, None, environ={})


def test_server_and_protocol_come_from_the_environment() -> None:
    ep = resolve_endpoint(
        None, None, environ={"WSLARKBOT_SERVER": "relay.example.com", "WSLARKBOT_PROTOCOL": "http"}
    )
    assert (ep.server, ep.protocol, ep.ws_scheme) == ("relay.example.com", "http", "ws")


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("localhost:8888", "http"),
        ("127.0.0.1:1", "http"),
        ("[::1]:80", "http"),
        ("relay.example.com", "https"),
    ],
)
def test_protocol_defaults_to_http_only_for_loopback_servers(server: str, expected: str) -> None:
    assert resolve_endpoint(server, None, environ={}).protocol == expected


def test_scheme_in_server_sets_protocol_and_is_stripped() -> None:
    ep = resolve_endpoint("https://relay.example.com:8443/", None, environ={})
    assert (ep.server, ep.protocol) == ("relay.example.com:8443", "https")
    assert ep.sub_url(["cli_a"]) == "wss://relay.example.com:8443/sub/cli_a?proto=2"


def test_bad_protocol_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        resolve_endpoint("relay.example.com", "ftp", environ={})


def test_app_mode_subscribes_to_every_app_id_with_comma_delimiter_and_hook_urls() -> None:
    ep = resolve_endpoint("localhost:8888", None, environ={})
    assert ep.sub_url(["cli_a", "cli_b", "cli_a"]) == "ws://localhost:8888/sub/cli_a,cli_b?proto=2"
    assert ep.hook_url("cli_a") == "http://localhost:8888/hook/cli_a"
    assert ep.auth_headers() == {}
    assert ep.reply_url("r-1") == "http://localhost:8888/sub/r-1"


def test_org_mode_subscribes_to_the_org_channel_with_basic_auth() -> None:
    ep = resolve_endpoint("relay.example.com", "https", org_name="acme", org_passwd="s3cret", environ={})
    assert ep.org_name == "org_acme"
    assert ep.sub_url(["cli_a", "cli_b"]) == "wss://relay.example.com/sub/org_acme?proto=2"
    assert ep.hook_url("cli_a") == "https://relay.example.com/org_acme/cli_a"
    scheme, token = ep.auth_headers()["Authorization"].split()
    assert scheme == "Basic" and base64.b64decode(token) == b"org_acme:s3cret"
    assert "s3cret" not in repr(ep)


def test_no_bot_means_no_subscription() -> None:
    with pytest.raises(ConfigurationError):
        resolve_endpoint("localhost", None, environ={}).sub_url([])


# -- backoff ----------------------------------------------------------------------------------------


def test_backoff_without_jitter_doubles_up_to_the_maximum() -> None:
    delays = list(itertools.islice(backoff(0.5, 4.0, jitter=False), 6))
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_backoff_full_jitter_stays_within_zero_and_the_ceiling() -> None:
    rng = random.Random(42)
    delays = list(itertools.islice(backoff(0.5, 30.0, rng=rng), 200))
    ceilings = [min(30.0, 0.5 * 2**n) for n in range(200)]
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    late = delays[20:]
    assert max(late) > 15.0 and min(late) < 15.0, "late delays spread over [0, 30]"
    assert len(set(late)) == len(late), "jittered delays differ"


def test_a_fresh_backoff_iterator_starts_small_again() -> None:
    """The client resets by asking the policy for a new iterator after a good connection."""
    first = backoff(0.5, 30.0, jitter=False)
    for _ in range(10):
        next(first)
    assert next(first) == 30.0
    assert next(backoff(0.5, 30.0, jitter=False)) == 0.5


@pytest.mark.parametrize(("initial", "maximum", "factor"), [(0, 1, 2), (2, 1, 2), (1, 2, 0.5)])
def test_backoff_rejects_nonsense_parameters(initial: float, maximum: float, factor: float) -> None:
    with pytest.raises(ConfigurationError):
        next(backoff(initial, maximum, factor))


def test_constant_policy_repeats_its_delay() -> None:
    assert list(itertools.islice(constant(60.0), 3)) == [60.0, 60.0, 60.0]
