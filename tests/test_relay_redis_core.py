"""The scale-out core without sockets: node messages, the delivery tally, config and URL handling."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys

import pytest

from wslarkbot.exceptions import ConfigurationError, ProtocolError
from wslarkbot.relay import RelayConfig
from wslarkbot.relay.config import env_name, flag_name
from wslarkbot.relay.hub import Event
from wslarkbot.relay.pending import Outcome, Resolution
from wslarkbot.relay.redis_link import backoff_delays, redact_url
from wslarkbot.relay.redis_protocol import (
    DeliveryReport,
    FanOut,
    Tally,
    channel_of,
    decode_fanout,
    decode_node_message,
    encode_answer,
    encode_delivered,
    encode_fanout,
    fanout_channel,
    resolution_of,
    resolve_args,
)


def test_fanout_message_round_trips_a_frame_with_newlines_and_unicode() -> None:
    frame = '{"body": "line1\\nline2 你好"}\n'
    event = Event("cli_a", "rid.1", "17-0", frame, buffered=True)
    assert decode_fanout("cli_a", encode_fanout("node-1", event)) == FanOut("node-1", event)
    hand_on = encode_fanout("node-1", event, group="workers", attempt=2, replay=True)
    assert decode_fanout("cli_a", hand_on) == FanOut("node-1", event, "workers", 2, True)
    with pytest.raises(ProtocolError):
        decode_fanout("cli_a", b"no separators")


def test_fanout_channel_maps_back_to_the_relay_channel_only() -> None:
    assert channel_of(fanout_channel("org_acme")) == "org_acme"
    assert channel_of("wslarkbot:node:x:replies") is None


def test_node_messages_round_trip_reports_and_answers() -> None:
    assert decode_node_message(encode_delivered("r1", 3, True)) == DeliveryReport("r1", 3, True)
    reply = Outcome("reply", '{"challenge":"c"}', via="ws")
    assert decode_node_message(encode_answer("r2", reply)) == ("r2", reply)
    assert decode_node_message(encode_answer("r3", Outcome("ack", via="http"))) == (
        "r3",
        Outcome("ack", None, "http"),
    )
    for bad in (b"{}", b"not json", b'{"t": "answer", "id": "r", "kind": "shutdown", "via": ""}'):
        with pytest.raises(ProtocolError):
            decode_node_message(bad)


def test_resolve_args_check_channels_only_for_websocket_answers() -> None:
    outcome = Outcome("ack", via="ws")
    assert resolve_args("r", outcome, None)[0] == "0"
    args = resolve_args("r", outcome, {"b", "a"})
    assert args[0] == "1" and args[2:] == ["a", "b"]
    assert resolution_of(b"forbidden") is Resolution.FORBIDDEN
    assert resolution_of("answered") is Resolution.ALREADY_ANSWERED
    with pytest.raises(ProtocolError):
        resolution_of(b"what")


async def test_tally_settles_when_every_reached_node_reported() -> None:
    tally = Tally()
    tally.add(DeliveryReport("r", 1, False))  # a report may beat PUBLISH's own answer
    assert not tally.settled.is_set()
    tally.expect(2)
    assert not tally.settled.is_set()
    tally.add(DeliveryReport("r", 2, True))
    await asyncio.wait_for(tally.settled.wait(), 1)
    assert (tally.subscribers, tally.protocol2) == (3, True)


async def test_tally_settles_at_once_when_an_answer_arrives() -> None:
    tally = Tally()
    tally.expect(3)
    tally.answer_arrived()
    await asyncio.wait_for(tally.settled.wait(), 1)
    assert tally.answered


def test_redis_url_password_is_never_shown() -> None:
    assert redact_url("redis://:s3cret@db.internal:6380/2") == "redis://:***@db.internal:6380/2"
    assert redact_url("rediss://user:s3cret@h/0") == "rediss://user:***@h/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert "s3cret" not in repr(RelayConfig(redis_url="redis://:s3cret@h/0"))


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    delays = list(itertools.islice(backoff_delays(0.1, 2.0), 8))
    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= 2.0 for d in delays) and delays[-1] >= 1.0


def test_redis_option_is_flag_redis_and_env_wslarkbot_redis() -> None:
    assert (flag_name("redis_url"), env_name("redis_url")) == ("--redis", "WSLARKBOT_REDIS")
    config = RelayConfig.from_env({"WSLARKBOT_REDIS": "redis://127.0.0.1:6379/0"})
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    with pytest.raises(ConfigurationError):
        RelayConfig(redis_url="http://127.0.0.1:6379")


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_in_memory_relay_does_not_import_redis() -> None:
    code = (
        "import sys\n"
        "from wslarkbot.relay import RelayConfig, create_app\n"
        "create_app(RelayConfig())\n"
        "print('redis' in sys.modules)\n"
    )
    assert _run_python(code).stdout.strip() == "False"


def test_redis_option_without_the_redis_extra_is_a_configuration_error() -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None  # as if the redis extra were not installed\n"
        "from wslarkbot.exceptions import ConfigurationError\n"
        "from wslarkbot.relay import RelayConfig, create_app\n"
        "try:\n"
        "    create_app(RelayConfig(redis_url='redis://127.0.0.1:1/0'))\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    assert "pip install 'wslarkbot[redis]'" in _run_python(code).stdout
