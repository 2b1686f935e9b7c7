"""The heartbeat rule both servers follow (relay/ws_policy.py)."""

from __future__ import annotations

from wslarkbot.relay.ws_policy import Beat, heartbeat_step


def test_a_silent_connection_is_pinged_after_one_interval() -> None:
    assert heartbeat_step(now=109.9, last_seen=100.0, ping_sent=0.0, interval=10) is Beat.WAIT
    assert heartbeat_step(now=110.0, last_seen=100.0, ping_sent=0.0, interval=10) is Beat.PING


def test_an_unanswered_ping_drops_the_connection_after_half_an_interval() -> None:
    assert heartbeat_step(now=114.9, last_seen=100.0, ping_sent=110.0, interval=10) is Beat.WAIT
    assert heartbeat_step(now=115.0, last_seen=100.0, ping_sent=110.0, interval=10) is Beat.DROP


def test_no_heartbeat_when_it_is_off() -> None:
    assert heartbeat_step(now=1e9, last_seen=0.0, ping_sent=1.0, interval=0) is Beat.WAIT
