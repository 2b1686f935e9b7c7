"""Fault test: the Redis master of two relay nodes is SIGKILLed under load and Sentinel promotes a replica
(issue 22).

A master with two replicas and one ``redis-server --sentinel`` (quorum 1, a master gone for 1 s is failed
over), two ``wslarkbot serve --redis redis+sentinel://... --buffer <app>`` nodes, a bot process on one of
them, and Feishu (the simulator) posting round-robin to both. Buffered events are answered 200 only once a
replica has them (``WAIT``, automatic with a Sentinel URL), so the failover cannot lose an event Feishu was
told is kept. During the failover webhooks get 503 and Feishu retries them (its schedule scaled down).

The promises: no event answered 2xx is lost, the nodes find the new master by themselves, and the time from
the kill to the first 2xx again is printed (docs/deploy.md has the figures).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest

from fault_fixtures import posix_only
from fault_harness import RELAY_ARGS, BotProcess, HandlerLog, wait_until
from redis_server import REDIS_MARKS
from wslarkbot.relay.testing import RedisSentinel, RedisServer, ServeProcess
from wslarkbot.sim import payloads
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.feishu import FeishuSimulator
from wslarkbot.sim.protocol import DeliveryResult

RATE = float(os.environ.get("WSLARKBOT_FAULT_RATE", "40"))
#: Feishu's retry schedule (15 s, 5 min, 1 h, 6 h) x 1e-3 = 15 ms, 0.3 s, 3.6 s, 21.6 s: a failover (and the
#: other replica's resync to the new master, which buffered events wait for) of up to about 25 s is covered.
TIME_SCALE = 1e-3
SECONDS = float(os.environ.get("WSLARKBOT_FAULT_SECONDS", "8"))

pytestmark = [posix_only, *REDIS_MARKS, pytest.mark.timeout(150 + 3 * SECONDS)]


async def test_a_sentinel_failover_under_load_loses_no_event_answered_2xx(tmp_path: Path) -> None:
    dirs = [tmp_path / name for name in ("master", "replica-1", "replica-2", "sentinel")]
    for d in dirs:
        d.mkdir()
    master = await RedisServer(dirs[0]).start()
    replicas = [
        await RedisServer(d, args=("--replicaof", "127.0.0.1", str(master.port))).start() for d in dirs[1:3]
    ]
    for replica in replicas:
        await replica.wait_log("MASTER <-> REPLICA sync: Finished with success")
    sentinel = await RedisSentinel(dirs[3], master.port).start()
    app = SimApp.random()
    args = ("--redis", sentinel.url, "--buffer", app.app_id, *RELAY_ARGS)
    nodes = [await ServeProcess.start("--port", "0", *args) for _ in range(2)]
    log = HandlerLog(tmp_path / "handled.log")
    bot = await BotProcess.start(nodes[0].port, app, tmp_path, log=log, dedup=False)
    sims = [
        FeishuSimulator(app, event_url=f"{node.url}/hook/{app.app_id}", time_scale=TIME_SCALE)
        for node in nodes
    ]
    try:
        loop = asyncio.get_running_loop()
        tasks: dict[str, asyncio.Task[DeliveryResult]] = {}
        sent_at: dict[str, float] = {}
        order = itertools.cycle(sims)
        started = loop.time()
        killed_at: float | None = None
        for n in range(int(RATE * SECONDS)):
            name = f"ev-{n:04d}"
            sent_at[name] = loop.time()
            tasks[name] = next(order).deliver_async(payloads.text_message(app, name))
            if killed_at is None and loop.time() - started >= SECONDS / 4:
                master.kill()
                killed_at = loop.time()
            await asyncio.sleep(1 / RATE)  # pacing, not synchronisation
        assert killed_at is not None
        for sim in sims:
            await sim.wait_idle(timeout=90)
        results = {name: task.result() for name, task in tasks.items()}
        answered = {name for name, r in results.items() if r.delivered}
        await wait_until(lambda: answered <= set(log.texts()), 20, "every answered event handled", poll=0.1)
        # recovery: the first event sent after the kill that was answered 2xx at its first attempt
        after = sorted((sent_at[n], n) for n in answered if sent_at[n] > killed_at)
        first_ok = next(
            (t for t, n in after if results[n].attempts and results[n].attempts[0].status == 200), None
        )
        assert first_ok is not None, "no webhook answered 2xx at once after the failover"
        recovery = first_ok - killed_at
        dropped = sorted(set(tasks) - answered)
        print(
            f"sent={len(tasks)} answered 2xx={len(answered)} dropped={len(dropped)} recovery={recovery:.1f}s"
        )
        assert any("+switch-master" in line for line in sentinel.lines), "sentinel did not fail over"
        assert dropped == [], "\n".join(line for line in sentinel.lines if "+" in line)
    finally:
        for sim in sims:
            await sim.aclose()
        await bot.kill()
        for node in nodes:
            await node.stop()
        for server in (sentinel, *replicas, master):
            await server.stop()
