"""Fault tests for competing consumers (``?group=``, docs/delivery.md): two real bot processes in one
group sharing one SQLite dedup store; one is SIGKILLed mid-stream. Every event must be handled exactly
once overall: the relay hands the dead member's unanswered events to the survivor (or Feishu retries
them), and the shared store stops a re-run of what the dead one already finished.
"""

from __future__ import annotations

import asyncio

from fault_fixtures import posix_only, world_fixture  # noqa: F401  (registers `world`)
from fault_harness import Tally, World, assert_exactly_once, burst, results_of, wait_until
from wslarkbot.sim import payloads

pytestmark = posix_only

GROUP = "workers"


async def test_group_member_killed_mid_stream_every_event_handled_exactly_once_overall(world: World) -> None:
    await world.relay()
    a = await world.bot(group=GROUP)
    b = await world.bot(group=GROUP)  # same dedup.sqlite: the store is shared by the group
    await world.wait_status("2 group members", lambda s: s["subscribers"] == 2)
    names = [f"ev-{i:03d}" for i in range(60)]
    async with world.sim() as sim:
        sender = asyncio.ensure_future(burst(sim, world.app, names, interval=0.03))
        await wait_until(
            lambda: len(world.log.texts(pid=a.pid)) >= 8 and len(world.log.texts(pid=b.pid)) >= 8,
            10,
            "both members handling events",
        )
        await a.kill()
        by_a = set(world.log.texts(pid=a.pid))
        results = await results_of(sim, await sender)
    tally = Tally.of(names, results, world.log)
    assert_exactly_once(tally)
    by_b = set(world.log.texts(pid=b.pid))
    assert len(by_a) < len(names) // 2 + 5, "a was killed mid-stream"
    assert by_a | by_b == set(names) and not by_a & by_b, "each event handled by exactly one member"
    assert (await world.status())["subscribers"] == 1, "the dead member was removed from the group"


async def test_group_member_killed_while_its_handler_runs_the_survivor_handles_the_event(
    world: World,
) -> None:
    await world.relay("--ack-timeout", "2.8")
    a = await world.bot(group=GROUP, slow="slow=30")  # a's handler of "slow-1" would take 30 s
    await world.bot(group=GROUP)
    await world.wait_status("2 group members", lambda s: s["subscribers"] == 2)
    async with world.sim() as sim:
        # The least-loaded member gets each event: push until a has taken a slow one.
        tasks = []
        for i in range(10):
            tasks.append(sim.deliver_async(payloads.text_message(world.app, f"slow-{i}")))
            if await _started_by(world, a.pid):
                break
        taken = await wait_until(lambda: _taken(world, a.pid), 10, "a slow handler running in a")
        await a.kill()  # before ack_after (2.5 s): nothing was acked for it
        results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    counts = world.log.done_counts()
    assert all(r.delivered for r in results), [[x.status for x in r.attempts] for r in results]
    assert counts[taken] == 1, f"{taken} handled {counts[taken]} times; statuses per event: " + str(
        [[x.status for x in r.attempts] for r in results]
    )


def _taken(world: World, pid: int) -> str | None:
    """A slow event a started (and, being slow, has not finished)."""
    started = world.log.texts("start", pid=pid)
    return started[0] if started else None


async def _started_by(world: World, pid: int) -> bool:
    try:
        await wait_until(lambda: _taken(world, pid), 0.5, "a started one")
    except AssertionError:
        return False
    return True
