"""Fault test: a rolling restart of two relay nodes behind nginx loses no event answered 2xx (issue 21).

Two ``wslarkbot serve --redis ... --buffer <app>`` processes behind a real nginx configured with
``deploy/nginx-lb.conf`` (the load balancer the compose file ships), one bot process connected through
nginx, and Feishu (the simulator) posting through nginx at a steady rate. Mid-stream each node in turn gets
SIGTERM (it drains: its listener closes so nginx sends new requests to the other node, waiting requests are
answered by the still-connected bot, then its WebSockets close 1012 and the bot reconnects at once, through
nginx, to the other node), and is started again on the same port before the next one goes.

The promise: every event answered 2xx reaches the bot, and webhooks answered otherwise are retried by
Feishu (its schedule scaled down, :data:`fault_harness.TIME_SCALE`). ``WSLARKBOT_FAULT_RATE`` and
``WSLARKBOT_FAULT_SECONDS`` scale the run (default 50 events/s for 6 s).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from fault_fixtures import posix_only
from fault_harness import RELAY_ARGS, TIME_SCALE, BotProcess, HandlerLog, wait_until
from redis_server import REDIS_MARKS
from system_programs import require
from wslarkbot.relay.testing import RedisServer, ServeProcess, free_port
from wslarkbot.sim import payloads
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.feishu import FeishuSimulator
from wslarkbot.sim.protocol import DeliveryResult

RATE = float(os.environ.get("WSLARKBOT_FAULT_RATE", "50"))
SECONDS = float(os.environ.get("WSLARKBOT_FAULT_SECONDS", "6"))
LB_CONF = Path(__file__).resolve().parents[1] / "deploy" / "nginx-lb.conf"

pytestmark = [posix_only, *REDIS_MARKS, pytest.mark.timeout(120 + 3 * SECONDS)]


class LoadBalancer:
    """nginx running ``deploy/nginx-lb.conf`` with the two nodes' ports and a free listening port."""

    def __init__(self, workdir: Path, ports: tuple[int, int]) -> None:
        require("nginx")
        self.prefix = workdir / "nginx"
        (self.prefix / "logs").mkdir(parents=True)
        self.port = free_port()
        server = (
            LB_CONF.read_text(encoding="utf-8")
            .replace("relay-a:8888", f"127.0.0.1:{ports[0]}")
            .replace("relay-b:8888", f"127.0.0.1:{ports[1]}")
            .replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        )
        temp = "\n".join(
            f"    {kind}_temp_path {self.prefix / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root;\n" if os.geteuid() == 0 else ""
        (self.prefix / "nginx.conf").write_text(
            f"{user}worker_processes 1;\npid {self.prefix / 'nginx.pid'};\n"
            f"error_log {self.prefix / 'error.log'};\n"
            f"events {{ worker_connections 1024; }}\nhttp {{\n    access_log off;\n{temp}\n{server}\n}}\n",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen(
            [nginx, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _listening(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_a_rolling_restart_of_two_nodes_behind_nginx_loses_no_event_answered_2xx(
    tmp_path: Path,
) -> None:
    redis = await RedisServer(tmp_path).start()
    app = SimApp.random()
    ports = (free_port(), free_port())
    args = ("--redis", redis.url, "--buffer", app.app_id, "--shutdown-timeout", "2", *RELAY_ARGS)
    nodes = [await ServeProcess.start("--port", str(port), *args) for port in ports]
    lb = LoadBalancer(tmp_path, ports)
    log = HandlerLog(tmp_path / "handled.log")
    bot: BotProcess | None = None
    sim = FeishuSimulator(
        app, event_url=f"http://127.0.0.1:{lb.port}/hook/{app.app_id}", time_scale=TIME_SCALE
    )
    try:
        lb.start()
        await wait_until(lambda: _listening(lb.port), 10, "nginx listening")
        bot = await BotProcess.start(lb.port, app, tmp_path, log=log, dedup=False)
        tasks: dict[str, asyncio.Task[DeliveryResult]] = {}
        loop = asyncio.get_running_loop()
        restarts: list[asyncio.Task[None]] = []
        drain_lines: list[str] = []

        async def roll() -> None:
            for i, port in enumerate(ports):
                code = await nodes[i].stop(signal_number=signal.SIGTERM)  # drains, then exits
                assert code == 0, "\n".join(nodes[i].lines[-20:])
                drain_lines.extend(line for line in nodes[i].lines if "relay draining" in line)
                nodes[i] = await ServeProcess.start("--port", str(port), *args)

        started = loop.time()
        total = int(RATE * SECONDS)
        for n in range(total):
            name = f"ev-{n:04d}"
            tasks[name] = sim.deliver_async(payloads.text_message(app, name))
            if not restarts and loop.time() - started >= SECONDS / 4:
                restarts.append(asyncio.ensure_future(roll()))
            await asyncio.sleep(1 / RATE)  # pacing, not synchronisation
        await asyncio.gather(*restarts)
        await sim.wait_idle(timeout=60)
        results = {name: task.result() for name, task in tasks.items()}
        answered = {name for name, r in results.items() if r.delivered}
        await wait_until(lambda: answered <= set(log.texts()), 20, "every answered event handled", poll=0.1)
        retried = sum(1 for r in results.values() if len(r.attempts) > 1)
        print(f"sent={total} answered 2xx={len(answered)} retried={retried} handled={len(set(log.texts()))}")
        assert len(drain_lines) == 2 and all("1012" in line for line in drain_lines), drain_lines
        # One node is up at every moment, so Feishu's retries get every event through in the end.
        assert answered == set(tasks), sorted(set(tasks) - answered)
    finally:
        await sim.aclose()
        if bot is not None:
            await bot.kill()
        lb.stop()
        for node in nodes:
            await node.stop()
        await redis.stop()
