"""Wire format round-trips (core, no sockets): envelope, hello, reply, ack, error, PING/PONG."""

from __future__ import annotations

import json

import pytest

from wslarkbot.exceptions import ProtocolError
from wslarkbot.wire import (
    PING,
    PONG,
    Ack,
    Envelope,
    Hello,
    Reply,
    ServerError,
    encode_message,
    filter_headers,
    is_org_channel,
    parse_client_message,
    parse_server_message,
)


def test_envelope_from_request_lowercases_headers_adds_ids_and_keeps_raw_body() -> None:
    raw = '{"a": "你好",  "b": 1}'.encode()
    env = Envelope.from_request(
        {"X-Lark-Signature": "s", "Cookie": "c", "Content-Type": "application/json"},
        raw,
        app_id="cli_a",
        org_id="hook",
        request_id="r1",
    )
    assert env.headers == {
        "x-lark-signature": "s",
        "content-type": "application/json",
        "x-app-id": "cli_a",
        "x-org-id": "hook",
        "x-request-id": "r1",
    }
    assert env.body == {"a": "你好", "b": 1}
    assert env.raw_bytes() == raw
    assert (env.request_id, env.app_id, env.org_id, env.has_signature) == ("r1", "cli_a", "hook", True)


def test_envelope_round_trips_through_json_including_unknown_fields() -> None:
    env = Envelope({"x-request-id": "r"}, {"k": [1]}, raw_body='{"k":[1]}', extra={"future": 1})
    back = parse_server_message(env.to_json())
    assert back == env


def test_envelope_of_an_original_relay_has_no_raw_body_and_re_encodes_compactly() -> None:
    env = parse_server_message(json.dumps({"headers": {"X-Request-Id": "r"}, "body": {"a": 1}}))
    assert isinstance(env, Envelope)
    assert env.raw_body is None and env.request_id == "r"
    assert env.raw_bytes() == b'{"a":1}'


def test_envelope_from_request_rejects_non_json() -> None:
    with pytest.raises(ProtocolError):
        Envelope.from_request({}, b"\xff", app_id="a", org_id="hook", request_id="r")


@pytest.mark.parametrize(
    "msg",
    [
        Hello(protocol=2, server="wslarkbot/1", channels=("cli_a", "org_b")),
        ServerError("nope", "r1"),
        ServerError("bad frame"),
    ],
)
def test_server_messages_round_trip(msg: Hello | ServerError) -> None:
    assert parse_server_message(encode_message(msg)) == msg


@pytest.mark.parametrize("msg", [Reply("r1", {"challenge": "x"}), Reply("r2", None), Ack("r3")])
def test_client_messages_round_trip(msg: Reply | Ack) -> None:
    assert parse_client_message(encode_message(msg)) == msg


@pytest.mark.parametrize("text", [PING, PONG, PING.encode()])
def test_ping_and_pong_parse_on_both_sides(text: str | bytes) -> None:
    expected = text.decode() if isinstance(text, bytes) else text
    assert parse_client_message(text) == expected
    assert parse_server_message(text) == expected


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        "[1]",
        '{"type": "reply", "request_id": "r"}',
        '{"type": "ack"}',
        '{"type": "ack", "request_id": "has space"}',
        '{"type": "nope", "request_id": "r"}',
    ],
)
def test_bad_client_frames_raise_protocol_error(frame: str) -> None:
    with pytest.raises(ProtocolError):
        parse_client_message(frame)


def test_hello_keeps_unknown_fields_and_rejects_non_integer_protocol() -> None:
    hello = parse_server_message('{"type":"hello","protocol":3,"server":"s","channels":["a"],"x":1}')
    assert hello == Hello(protocol=3, server="s", channels=("a",), extra={"x": 1})
    with pytest.raises(ProtocolError):
        parse_server_message('{"type":"hello","protocol":"2"}')


def test_filter_headers_drops_credentials_and_hop_by_hop_headers() -> None:
    kept = filter_headers({"Authorization": "x", "Connection": "close", "X-Request-Id": "r"})
    assert kept == {"x-request-id": "r"}


def test_filter_headers_takes_pairs_in_arrival_order_and_the_last_repeated_name_wins() -> None:
    pairs = [("X-Lark-Signature", "a"), ("Cookie", "c"), ("x-lark-signature", "b"), ("Host", "h")]
    assert filter_headers(pairs) == {"x-lark-signature": "b", "host": "h"}


def test_org_channels_are_those_starting_with_org_() -> None:
    assert is_org_channel("org_acme") and not is_org_channel("cli_a") and not is_org_channel("organic")
