"""Events/s through one relay node vs several nodes sharing Redis (``wslarkbot serve --redis``).

    python -m bench.scaleout                       # 10 s per scenario, 32 concurrent webhook callers
    python -m bench.scaleout --seconds 5 --concurrency 64 --scenarios redis-2

Scenarios (each node is a ``wslarkbot serve`` subprocess at the default log level, i.e. one log line per
webhook; Redis is a throwaway redis-server):

* ``memory-1``: one node, in-memory hub (the default);
* ``redis-1``: one node with ``--redis``;
* ``redis-2``: two nodes with ``--redis``; webhooks alternate between the nodes, the bot is connected to
  the first, so half the events and half the acks cross nodes;
* ``redis-2-spread``: two nodes, one bot connection on each node (same channel, as several bot replicas
  would be), webhooks alternate; every event is delivered twice and acked by whichever bot answers first.

The bot is a protocol-2 WebSocket client that acks every event, so a webhook completes only after its ack
came back through the relay: the figure is the full Feishu -> relay -> bot -> relay -> Feishu round trip.
Load generator and bot run in this process; everything shares the machine's CPUs, so read the figures as
relative (docs/deploy.md quotes a run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from wslarkbot.relay.testing import SIGNED, RedisServer, ServeProcess

BODY = json.dumps(
    {"schema": "2.0", "header": {"event_type": "im.message.receive_v1"}, "encrypt": "x" * 1200}
).encode()
SCENARIOS = ("memory-1", "redis-1", "redis-2", "redis-2-spread")


@contextlib.asynccontextmanager
async def nodes(count: int, redis_url: str | None) -> AsyncIterator[list[ServeProcess]]:
    args = ["--port", "0", "--ack-timeout", "2.8"]
    if redis_url:
        args += ["--redis", redis_url]
    started: list[ServeProcess] = []
    try:
        for _ in range(count):
            started.append(await ServeProcess.start(*args))
        yield started
    finally:
        for node in started:
            await node.stop()


async def bot(session: aiohttp.ClientSession, url: str, ready: asyncio.Event, stop: asyncio.Event) -> int:
    """Ack every event; returns how many it received."""
    received = 0
    async with session.ws_connect(url) as ws:
        await ws.receive()  # hello
        ready.set()
        while not stop.is_set():
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            env = json.loads(msg.data)
            received += 1
            await ws.send_str(json.dumps({"type": "ack", "request_id": env["headers"]["x-request-id"]}))
    return received


async def load(
    session: aiohttp.ClientSession, urls: list[str], seconds: float, concurrency: int
) -> tuple[int, int, list[float]]:
    """``concurrency`` callers POSTing back to back for ``seconds``; returns (ok, failed, latencies)."""
    deadline = time.monotonic() + seconds
    ok = failed = 0
    latencies: list[float] = []
    headers = {"Content-Type": "application/json", **SIGNED}

    async def caller(i: int) -> None:
        nonlocal ok, failed
        n = i
        while time.monotonic() < deadline:
            url = urls[n % len(urls)]
            n += 1
            t0 = time.monotonic()
            async with session.post(url, data=BODY, headers=headers) as resp:
                await resp.read()
                if resp.status == 200:
                    ok += 1
                    latencies.append(time.monotonic() - t0)
                else:
                    failed += 1

    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return ok, failed, latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def scenario(name: str, redis: RedisServer, seconds: float, concurrency: int) -> dict[str, Any]:
    redis_url = redis.url
    count = 2 if name.startswith("redis-2") else 1
    async with nodes(count, redis_url if name.startswith("redis") else None) as relay_nodes:
        bot_nodes = relay_nodes if name.endswith("spread") else relay_nodes[:1]
        conn = aiohttp.TCPConnector(limit=concurrency + 8)
        async with aiohttp.ClientSession(connector=conn) as session:
            stop = asyncio.Event()
            readies = [asyncio.Event() for _ in bot_nodes]
            bots = [
                asyncio.ensure_future(bot(session, n.ws_url("cli_bench"), r, stop))
                for n, r in zip(bot_nodes, readies, strict=True)
            ]
            await asyncio.gather(*(r.wait() for r in readies))
            hooks = [f"{n.url}/hook/cli_bench" for n in relay_nodes]
            await load(session, hooks, 1.0, concurrency)  # warm-up
            pids = [n.proc.pid for n in relay_nodes]
            redis_pid = redis.proc.pid if redis.proc and name.startswith("redis") else None
            cpu0 = [cpu_seconds(pid) for pid in pids]
            redis0 = cpu_seconds(redis_pid) if redis_pid else 0.0
            started = time.monotonic()
            ok, failed, lat = await load(session, hooks, seconds, concurrency)
            elapsed = time.monotonic() - started
            node_cpu = sum(cpu_seconds(pid) for pid in pids) - sum(cpu0)
            redis_cpu = (cpu_seconds(redis_pid) - redis0) if redis_pid else 0.0
            stop.set()
            for task in bots:
                task.cancel()
            await asyncio.gather(*bots, return_exceptions=True)
    lat.sort()
    return {
        "scenario": name,
        "events_per_s": round(ok / elapsed),
        "failed": failed,
        "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None,
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1) if lat else None,
        # CPU per event, summed over the relay nodes, and Redis's: the sizing figures.
        "node_cpu_ms_per_event": round(node_cpu * 1000 / ok, 3) if ok else None,
        "redis_cpu_ms_per_event": round(redis_cpu * 1000 / ok, 3) if ok else None,
    }


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args(argv)
    print(f"# {os.cpu_count()} CPUs, {args.concurrency} concurrent callers, {args.seconds:g} s per scenario")
    with tempfile.TemporaryDirectory() as tmp:
        redis = await RedisServer(Path(tmp)).start()
        try:
            for name in args.scenarios.split(","):
                print(json.dumps(await scenario(name, redis, args.seconds, args.concurrency)), flush=True)
        finally:
            await redis.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
