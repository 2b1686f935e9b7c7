"""Delivery core without sockets: message ids, buffer bounds (size, TTL with an injected clock), replay
cursors, group selection, the subscriber's hold/release, and the client's resume cursor (docs/delivery.md)."""

from __future__ import annotations

import json

import pytest

from wslarkbot import wire
from wslarkbot.client.config import resolve_endpoint
from wslarkbot.client.resume import ResumeCursor
from wslarkbot.relay.buffer import (
    BufferFull,
    BufferPolicy,
    BufferStore,
    ChannelBuffer,
    IdClock,
    parse_id,
    parse_since,
    stamp_frame,
)
from wslarkbot.relay.groups import GroupRing, InFlight, InFlightTable
from wslarkbot.relay.hub import Subscriber


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


BODY = '{"headers":{"x-request-id":"r"},"body":{"k":1}}'


def test_ids_increase_strictly_within_one_millisecond_and_across_a_clock_step_back() -> None:
    clock = Clock()
    ids = IdClock(clock)
    first, second = ids.next(), ids.next()
    clock.now -= 5  # the wall clock steps back: ids keep increasing
    third = ids.next()
    clock.now += 10
    fourth = ids.next()
    assert first < second < third < fourth
    assert second == (first[0], first[1] + 1) and third == (first[0], first[1] + 2)
    assert fourth == (int(clock.now * 1000), 0)


def test_stamped_frame_is_the_envelope_plus_id_channel_and_replay() -> None:
    live = json.loads(stamp_frame(BODY, entry_id="17-3", channel="cli_a"))
    replay = json.loads(stamp_frame(BODY, entry_id="17-3", channel="cli_a", replay=True))
    assert live == {"id": "17-3", "channel": "cli_a", **json.loads(BODY)}
    assert replay == {"replay": True, **live}
    env = wire.Envelope.from_dict(replay)
    assert (env.message_id, env.channel, env.replay, env.request_id) == ("17-3", "cli_a", True, "r")


def test_buffer_keeps_size_entries_and_drops_the_oldest_only_once_acked() -> None:
    buf = ChannelBuffer("cli_a", size=2, ttl=60, clock=Clock())
    one = buf.append("r1", BODY)
    buf.append("r2", BODY)
    with pytest.raises(BufferFull):
        buf.append("r3", BODY)  # both unacked: refused, nothing dropped
    assert [e.request_id for e in buf] == ["r1", "r2"]
    assert buf.mark_acked(one.id_text)
    buf.append("r3", BODY)
    assert [e.request_id for e in buf] == ["r2", "r3"]
    assert not buf.mark_acked(one.id_text)  # gone


def test_buffer_drops_entries_older_than_the_ttl_and_counts_unacked_ones_as_expired() -> None:
    clock = Clock()
    buf = ChannelBuffer("cli_a", size=10, ttl=60, clock=clock)
    old = buf.append("old", BODY)
    buf.mark_acked(old.id_text)
    buf.append("old-unacked", BODY)
    clock.now += 30
    buf.append("young", BODY)
    clock.now += 30.001
    assert [e.request_id for e in buf] == ["young"]
    assert buf.expired == 1


def test_replay_is_everything_after_since_or_else_the_unacked_entries() -> None:
    store = BufferStore(BufferPolicy(("cli_*",), 10, 60), clock=Clock())
    entries = [store.append("cli_a", f"r{i}", BODY) for i in range(4)]
    store.mark_acked("cli_a", entries[0].id_text)
    store.mark_acked("cli_a", entries[2].id_text)
    after_first = store.replay("cli_a", entries[0].id_text)
    assert [e.request_id for e in after_first] == ["r1", "r2", "r3"]
    assert [e.request_id for e in store.replay("cli_a", None)] == ["r1", "r3"]
    assert store.replay("cli_b", None) == []
    assert [json.loads(e.frame)["id"] for e in entries] == [e.id_text for e in entries]


def test_policy_matches_fnmatch_patterns_case_sensitively() -> None:
    policy = BufferPolicy.parse(" cli_*, org_acme ,", size=5, ttl=1)
    assert policy.patterns == ("cli_*", "org_acme")
    assert policy.buffered("cli_x") and policy.buffered("org_acme")
    assert not policy.buffered("org_other") and not policy.buffered("CLI_x")
    assert not BufferPolicy.parse(None, size=5, ttl=1).buffered("cli_x")


def test_since_names_subscribed_channels_with_valid_ids_only() -> None:
    assert parse_since("cli_a:17-0,org_x:18-2", ["cli_a", "org_x"]) == {"cli_a": "17-0", "org_x": "18-2"}
    assert parse_since("", ["cli_a"]) == {}
    for bad in ("cli_b:1-0", "cli_a:1", "cli_a", "cli_a:x-1"):
        with pytest.raises(ValueError):
            parse_since(bad, ["cli_a"])
    assert parse_id("17-3") == (17, 3)


class M:
    def __init__(self, id: int, load: int = 0) -> None:
        self.id = id
        self.load = load


def test_group_ring_picks_round_robin_among_the_least_loaded() -> None:
    ring: GroupRing[M] = GroupRing()
    members = [M(1), M(2), M(3)]
    for m in members:
        ring.add(m)
    picks = [ring.pick() for _ in range(6)]
    assert sorted(p.id for p in picks if p) == [1, 1, 2, 2, 3, 3]
    members[0].load = 5
    assert {getattr(ring.pick(), "id", None) for _ in range(4)} == {2, 3}
    assert getattr(ring.pick(exclude={2, 3}), "id", None) == 1
    ring.remove(members[0])
    assert ring.pick(exclude={2, 3}) is None


def test_in_flight_table_is_bounded_and_drains_oldest_first() -> None:
    table = InFlightTable(limit=2)
    for i in range(3):
        table.add(InFlight("cli_a", "g", f"r{i}", BODY, f"1-{i}"))
    assert "r0" not in table and len(table) == 2
    assert table.pop("r1") is not None
    assert [i.request_id for i in table.drain()] == ["r2"] and len(table) == 0


async def drain(sub: Subscriber, count: int) -> list[str | None]:
    return [await sub.next_frame() for _ in range(count)]


async def test_held_live_frames_the_replay_sent_are_dropped_once_released_and_the_rest_kept() -> None:
    sub = Subscriber(("cli_a", "cli_b"), protocol=2, peer="p", max_buffer_bytes=1 << 20)
    sub.hold()
    assert sub.offer("live-5", ("cli_a", "5-0"))
    assert sub.offer("live-7", ("cli_a", "7-0"))
    assert sub.offer("other-1", ("cli_b", "1-0"))
    assert sub.offer("unbuffered", None)
    sub.offer("replay-5", replay=True)  # what the replay queued while holding is held too, in order
    sub.release({("cli_a", "5-0"), ("cli_a", "6-0")})
    assert await drain(sub, 4) == ["live-7", "other-1", "unbuffered", "replay-5"]


async def test_a_replay_larger_than_the_outgoing_buffer_is_paced_and_live_frames_queue_behind_it() -> None:
    sub = Subscriber(("cli_a",), protocol=2, peer="p", max_buffer_bytes=100)
    for n in range(5):
        assert sub.offer(f"replay-{n}".ljust(40), replay=True)
    assert sub.buffered_bytes == 80  # two fit; three wait in the backlog
    assert sub.offer("live-a".ljust(40))  # behind the backlog, limited on its own
    assert sub.offer("live-b".ljust(40))
    assert not sub.offer("live-c".ljust(40)) and sub.overloaded  # 120 live bytes waiting > 100
    frames = await drain(sub, 7)
    expected = [*(f"replay-{n}" for n in range(5)), "live-a", "live-b"]
    assert [f.strip() if f else f for f in frames] == expected
    assert sub.buffered_bytes == 0


def test_client_cursor_resumes_after_the_highest_id_per_channel_and_refs_answers() -> None:
    cursor = ResumeCursor(max_refs=2)
    for rid, channel, mid in [("r1", "cli_a", "20-0"), ("r2", "cli_a", "9-5"), ("r3", "cli_b", "3-1")]:
        cursor.seen(wire.Envelope({"x-request-id": rid}, {}, extra={"id": mid, "channel": channel}))
    cursor.seen(wire.Envelope({"x-request-id": "r4"}, {}))  # an original relay: no id
    assert cursor.since(["cli_a", "cli_b", "cli_c"]) == "cli_a:20-0,cli_b:3-1"
    assert cursor.ref("r3") == wire.MessageRef("cli_b", "3-1")
    assert cursor.ref("r1") is None  # bounded: forgotten
    endpoint = resolve_endpoint("relay:8888", "http")
    url = endpoint.sub_url(["cli_a"], group="workers", since=cursor.since(["cli_a"]))
    assert url == "ws://relay:8888/sub/cli_a?proto=2&group=workers&since=cli_a:20-0"


def test_answers_carry_the_message_ref_and_parse_back() -> None:
    ack = wire.Ack("r1", wire.MessageRef("cli_a", "17-0"))
    assert json.loads(wire.encode_message(ack)) == {
        "type": "ack",
        "request_id": "r1",
        "channel": "cli_a",
        "id": "17-0",
    }
    assert wire.parse_client_message(wire.encode_message(ack)) == ack
    assert wire.parse_client_message('{"type":"ack","request_id":"r1"}') == wire.Ack("r1")
