"""Fault tests for the relay's event buffer (``--buffer``, docs/delivery.md): a real bot process SIGKILLed
mid-stream while the relay buffers its channel; the restarted process gets the buffered events by replay.
Feishu gets 200 for every event at the first attempt (nothing for it to retry) and every event is handled
exactly once (the SQLite dedup store skips what the killed process finished, if it is replayed again).
"""

from __future__ import annotations

import asyncio

import pytest

from fault_fixtures import posix_only, world_fixture  # noqa: F401  (registers `world`)
from fault_harness import Tally, World, assert_exactly_once, burst, results_of, wait_until

pytestmark = posix_only


async def test_bot_killed_mid_stream_buffered_events_are_replayed_to_the_restarted_bot_exactly_once(
    world: World,
) -> None:
    await world.relay("--buffer", "cli_*")
    # Default claim_ttl (10 min): a claim left pending by the kill is taken over at once by the restarted
    # process (its owner is dead), so it cannot swallow the replay.
    first = await world.bot()
    names = [f"ev-{i:03d}" for i in range(60)]
    async with world.sim() as sim:
        sender = asyncio.ensure_future(burst(sim, world.app, names, interval=0.03))
        await wait_until(lambda: len(world.log.texts()) >= 15, 10, "15 events handled before the kill")
        await first.kill()
        before_kill = set(world.log.texts(pid=first.pid))
        # Feishu is answered meanwhile: the relay keeps what nobody acked.
        results = await results_of(sim, await sender)
        second = await world.bot()
        await wait_until(lambda: set(world.log.texts()) >= set(names), 15, "every event handled")
    tally = Tally.of(names, results, world.log)
    assert_exactly_once(tally)
    assert all(s == [200] for s in tally.statuses.values()), "no Feishu retry was needed: " + str(
        {n: s for n, s in tally.statuses.items() if s != [200]}
    )
    assert 15 <= len(before_kill) < len(names), "the bot was killed mid-stream"
    by_second = set(world.log.texts(pid=second.pid))
    assert by_second == set(names) - before_kill, (
        "the restarted bot got exactly what the first did not finish"
    )
    status = await world.status()
    assert status["buffered"] >= 1, status


@pytest.mark.parametrize("dedup", [False, True], ids=["dedup-off", "dedup-sqlite"])
async def test_a_bot_whose_connection_keeps_dropping_never_stalls_its_buffered_channel(
    world: World, dedup: bool
) -> None:
    """Issue 18: the bot's TCP connection is aborted every 0.7 s (it resumes with ``since``) while 60
    events/s arrive on a buffered channel of 100 entries. Acks that arrive after the webhook timed out, or
    over the next connection, settle their entries: no event is refused (503), none is lost, and at the
    end nothing the bot handled is left unacked."""
    await world.relay("--buffer", "cli_*", "--buffer-size", "100")
    bot = await world.bot(drop_every=0.7, dedup=dedup)
    names = [f"ev-{i:03d}" for i in range(240)]
    async with world.sim() as sim:
        results = await results_of(sim, await burst(sim, world.app, names, interval=1 / 60))
    try:
        await wait_until(lambda: set(world.log.texts()) >= set(names), 20, "every event handled")
    except AssertionError:
        missing = sorted(set(names) - set(world.log.texts()))
        raise AssertionError(
            f"not handled: {missing}\n{await world.status()}\n"
            + "\n".join(world.relays[0].lines[-40:])
            + "\nBOT:\n"
            + bot.stderr(6000)
        ) from None
    tally = Tally.of(names, results, world.log)
    refused = {n: s for n, s in tally.statuses.items() if s != [200]}
    assert not refused, f"events refused while the bot was connected: {refused}"
    assert not tally.lost and not tally.dropped, tally.summary()
    assert world.log.texts("drop", pid=bot.pid), "the connection was dropped during the run"
    try:
        await world.wait_status("every buffered event settled", lambda s: s["buffered_unacked"] == 0)
    except AssertionError:
        raise AssertionError(f"{await world.status()}\n" + "\n".join(world.relays[0].lines[-60:])) from None
