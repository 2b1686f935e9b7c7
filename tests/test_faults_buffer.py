"""Fault tests for the relay's event buffer (``--buffer``, docs/delivery.md): a real bot process SIGKILLed
mid-stream while the relay buffers its channel; the restarted process gets the buffered events by replay.
Feishu gets 200 for every event at the first attempt (nothing for it to retry) and every event is handled
exactly once (the SQLite dedup store skips what the killed process finished, if it is replayed again).
"""

from __future__ import annotations

import asyncio

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
