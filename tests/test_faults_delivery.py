"""Fault tests for "nothing lost": real relay and bot processes killed (SIGKILL), frozen (SIGSTOP) and
restarted on the same port, with the Feishu simulator as Feishu (its retry schedule scaled down).

Each test counts what Feishu sent and concluded (delivered / dropped, per attempt), what the handlers
ran (the bot processes log every handler start and end, see tests/fault_harness.py), and asserts that
nothing is lost outside the documented window (a handler still running past ``ack_after`` when its
process dies) and that no handler runs twice. Waits are on conditions with deadlines (handler-log lines,
relay ``/status`` counters and log lines, simulator results), never on fixed sleeps; the only sleep is
the pacing of a burst.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from typing import Any

import pytest
import websockets

from fault_fixtures import posix_only, world_fixture  # noqa: F401  (registers `world`)
from fault_harness import (
    Tally,
    World,
    assert_exactly_once,
    burst,
    drain_until_closed,
    pending_claims,
    raw_subscribe,
    results_of,
    wait_until,
)
from wslarkbot.sim import payloads
from wslarkbot.sim.feishu import FEISHU_RETRY_INTERVALS

pytestmark = posix_only


# -- 1. relay killed mid-stream ------------------------------------------------------------------------


async def test_relay_killed_mid_stream_and_restarted_every_event_handled_exactly_once(world: World) -> None:
    relay = await world.relay()
    # Every 5th handler takes 0.8 s (< ack_after): the relay dies while some run, so their acks are lost,
    # Feishu retries events the bot already has, and the dedup store must recognise them.
    bot = await world.bot(slow="slow=0.8")
    names = [f"{'slow' if i % 5 == 0 else 'ev'}-{i:03d}" for i in range(60)]

    def slow_running() -> bool:
        return bool(set(world.log.texts("start")) - set(world.log.texts("done")))

    async with world.sim() as sim:
        sender = asyncio.ensure_future(burst(sim, world.app, names, interval=0.03))
        await wait_until(
            lambda: len(world.log.texts()) >= 15 and slow_running(), 10, "15 handled, a slow one running"
        )
        relay.kill()  # SIGKILL: in-flight webhooks get a reset, the bot its connection dropped
        await relay.stop()
        killed_at = len(world.log.texts())
        await world.relay()  # same port
        await world.log.wait_ready(bot.pid, count=2)  # the bot reconnected by itself
        results = await results_of(sim, await sender)
    tally = Tally.of(names, results, world.log)
    assert_exactly_once(tally)
    assert killed_at < len(names), "the relay was killed mid-stream"
    failed = [n for n in names if any(s != 200 for s in tally.statuses[n])]
    assert failed, "some attempts hit the dead relay and were retried by Feishu"
    assert bot.duplicates_skipped() >= 1, "retries of events the bot had already taken were not re-run"


# -- 2. bot process killed mid-stream --------------------------------------------------------------------


async def test_bot_killed_mid_stream_and_restarted_feishu_retries_are_handled_exactly_once(
    world: World,
) -> None:
    await world.relay()
    # Default claim_ttl (10 min): a claim the killed process left pending (if the kill lands inside a
    # handler) is taken over at once by the new process, which sees that its owner is dead.
    first = await world.bot()
    names = [f"ev-{i:03d}" for i in range(60)]
    async with world.sim() as sim:
        sender = asyncio.ensure_future(burst(sim, world.app, names, interval=0.03))
        await wait_until(lambda: len(world.log.texts()) >= 15, 10, "15 events handled before the kill")
        await first.kill()
        before_kill = set(world.log.texts(pid=first.pid))
        second = await world.bot()
        results = await results_of(sim, await sender)
    tally = Tally.of(names, results, world.log)
    assert_exactly_once(tally)
    assert 15 <= len(before_kill) < len(names), "the bot was killed mid-stream"
    by_second = set(world.log.texts(pid=second.pid))
    assert by_second and not (by_second & before_kill), "handled-and-acked events were not run again"
    unanswered = [n for n in names if any(s in (503, 504) for s in tally.statuses[n])]
    assert unanswered, "events reaching the dead bot (504) or no bot (503) were answered honestly"
    assert set(unanswered) <= tally.delivered, "and Feishu's retries delivered them to the new process"


async def test_bot_killed_before_ack_after_while_handler_runs_the_retry_is_handled(world: World) -> None:
    await world.relay()
    first = await world.bot(slow="slow-1=30")  # this process's handler would run 30 s: it is killed first
    async with world.sim() as sim:
        task = sim.deliver_async(payloads.text_message(world.app, "slow-1"))
        await wait_until(lambda: "slow-1" in world.log.texts("start"), 10, "the handler started")
        await first.kill()  # well before ack_after (2.5 s): no ack was sent, so the relay answers 504
        left_pending = pending_claims(world.tmp / "dedup.sqlite")
        await world.bot()  # default SqliteDeduplicator (claim_ttl 10 min), instant handlers
        result = await asyncio.wait_for(task, 30)
    assert len(left_pending) == 1 and left_pending[0][1] > time.time(), "the dead claim was live, not expired"
    assert result.attempts[0].status == 504, "the dead bot never acked: Feishu retries"
    handled = world.log.done_counts()["slow-1"]
    assert result.delivered and handled == 1, (
        f"delivered={result.delivered} statuses={[a.status for a in result.attempts]} handled={handled}"
    )


# -- 3. slow consumer ------------------------------------------------------------------------------------


async def test_slow_subscriber_is_disconnected_at_its_buffer_limit_and_the_healthy_bot_gets_everything(
    world: World,
) -> None:
    # Loopback TCP buffers (autotuned up to 4 MB) absorb about 1.5 MB before the relay's own buffer
    # grows, so the frames are big (~64 KB: a 45 KB text, encrypted) and the burst is ~4 MB. The heartbeat
    # is long: the buffer limit, not a missed pong, must be what disconnects the non-reader.
    limit = 256 * 1024
    relay = await world.relay(
        "--max-subscriber-buffer-bytes", str(limit), "--ack-timeout", "2.8", "--heartbeat", "30"
    )
    bot = await world.bot()
    slow = await asyncio.to_thread(raw_subscribe, world.port, world.app.app_id)
    try:
        await world.wait_status("2 subscribers", lambda s: s["subscribers"] == 2)
        names = [f"big-{i:03d}" for i in range(60)]
        async with world.sim() as sim:
            results = await results_of(sim, await burst(sim, world.app, names, interval=0.02, pad=45_000))
        kicked = await relay.wait_line(r"too slow: (\d+) bytes buffered", timeout=10)
        await world.wait_status("the slow one removed", lambda s: s["subscribers"] == 1)
        # The relay closed it: reading it now ends in EOF/reset after what was already in flight.
        received = await asyncio.to_thread(drain_until_closed, slow)
    finally:
        slow.close()
    sent_bytes = sum(len(r.attempts[0].body) for r in results.values())
    tally = Tally.of(names, results, world.log)
    assert_exactly_once(tally)
    assert all(len(s) == 1 for s in tally.statuses.values()), "every event answered 200 at once (the ack)"
    assert int(kicked.group(1)) <= limit, "the relay never held more than the limit for it"
    assert received < sent_bytes, "the slow reader did not get everything: it was cut off"
    status = await world.status()
    assert status["published"] == len(names) and status["undelivered"] == 0 and status["acks"] == len(names)
    assert status["timeouts"] == 0
    assert set(world.log.texts(pid=bot.pid)) == set(names)


# -- 4. a subscriber that never acks ----------------------------------------------------------------------


async def test_never_acking_subscriber_alone_gets_504s_and_feishu_drops_then_a_healthy_bot_acks(
    world: World,
) -> None:
    await world.relay("--ack-timeout", "0.3")
    frames: list[dict[str, Any]] = []

    async def never_ack(ws: Any) -> None:
        async for raw in ws:  # reads (and answers pings) but never acks
            frames.append(json.loads(raw))

    async with websockets.connect(f"ws://127.0.0.1:{world.port}/sub/{world.app.app_id}?proto=2") as ws:
        reader = asyncio.ensure_future(never_ack(ws))
        alone = ["alone-0", "alone-1", "alone-2"]
        async with world.sim(time_scale=1e-4) as sim:
            first = await results_of(sim, await burst(sim, world.app, alone, interval=0.0))
            for name in alone:
                statuses = [a.status for a in first[name].attempts]
                assert statuses == [504] * (1 + len(FEISHU_RETRY_INTERVALS)), (name, statuses)
                assert first[name].dropped, "Feishu's verdict after 4 retries: dropped"
            assert all(s.status != 200 for s in sim.sent), "the relay never answered 200 without an ack"
            status = await world.status()
            assert (status["acks"], status["replies"], status["timeouts"]) == (0, 0, 15)
            assert sum(1 for f in frames if f.get("type") != "hello") == 15, "each attempt reached it"

            bot = await world.bot()
            await world.wait_status("2 subscribers", lambda s: s["subscribers"] == 2)
            together = ["together-0", "together-1", "together-2"]
            second = await results_of(sim, await burst(sim, world.app, together, interval=0.0))
        reader.cancel()
    for name in together:
        assert [a.status for a in second[name].attempts] == [200], name
    assert world.log.done_counts() == {n: 1 for n in together}, "dropped events were never handled"
    assert set(world.log.texts(pid=bot.pid)) == set(together)


# -- 5. connection dropped without a close frame ---------------------------------------------------------


@pytest.mark.parametrize("how", ["bot-sigkill", "raw-socket-closed", "bot-sigstop-silent"])
async def test_dropped_connection_is_noticed_and_the_next_webhook_is_answered_503(
    world: World, how: str
) -> None:
    relay = await world.relay()
    bot = await world.bot() if how.startswith("bot") else None
    raw = None if bot else await asyncio.to_thread(raw_subscribe, world.port, world.app.app_id)
    await world.wait_status("1 subscriber", lambda s: s["subscribers"] == 1)
    started = time.monotonic()
    if how == "bot-sigkill":
        assert bot is not None
        await bot.kill()  # the kernel closes the TCP connection: FIN, no WebSocket close frame
    elif how == "raw-socket-closed":
        assert raw is not None
        raw.close()  # FIN without a WebSocket close frame
    else:
        assert bot is not None
        bot.proc.send_signal(signal.SIGSTOP)  # frozen: TCP stays up, no pong ever (only pings can tell)
    async with world.sim(retry_intervals=()) as sim:  # one attempt each: the verdict of the answer
        meanwhile = await sim.send_text_message("meanwhile")
        # Before the relay notices: 503 (already noticed) or 504 (delivered to the dead peer, no ack).
        assert meanwhile.attempts[0].status in (503, 504), "never 200 for an event nobody acked"
        await world.wait_status("subscriber removed", lambda s: s["subscribers"] == 0, timeout=8)
        noticed = time.monotonic() - started
        await relay.wait_line(re.compile(r"unsubscribe peer=.* channels=" + world.app.app_id))
        result = await sim.send_text_message("after-drop")
    assert [a.status for a in result.attempts] == [503], "honest: nobody is there, Feishu will retry"
    if how == "bot-sigstop-silent":
        assert noticed < 5, f"heartbeat (1 s) noticed the silent peer in {noticed:.1f} s"
    assert world.log.texts() == [], "nothing was handled"


async def test_a_handler_that_raises_is_answered_500_and_feishus_retry_handles_it(world: World) -> None:
    """Issue 18: a failed handler is nacked, the relay answers Feishu 500 at once, Feishu delivers the
    event again, and the bot's dedup store (which forgot the failed run) lets the retry run it."""
    await world.relay()
    await world.bot(fail_once="bad")
    names = [f"{kind}-{i:02d}" for i in range(10) for kind in ("ok", "bad")]
    async with world.sim() as sim:
        results = await results_of(sim, await burst(sim, world.app, names, interval=0.02))
    tally = Tally.of(names, results, world.log)
    assert_exactly_once(tally)
    bad = [n for n in names if n.startswith("bad")]
    assert {n: tally.statuses[n] for n in bad} == {n: [500, 200] for n in bad}, tally.summary()
    assert all(tally.statuses[n] == [200] for n in names if n.startswith("ok")), tally.summary()
    assert sorted(world.log.texts("fail")) == sorted(bad)
    status = await world.status()
    assert status["nacks"] == len(bad), status
