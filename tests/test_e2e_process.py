"""End to end with real processes and threads: a relay killed and restarted, ``wslarkbot run`` stopped by
SIGTERM, the blocking ``Client`` started in a thread and stopped from another."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from wslarkbot.bot import Bot
from wslarkbot.client import AsyncClient, Client, backoff
from wslarkbot.relay.runner import RelayThread
from wslarkbot.relay.testing import test_config as relay_test_config
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.feishu import FeishuSimulator, SyncFeishuSimulator
from wslarkbot.sim.openapi_server import FakeOpenAPI

WAIT = 10.0  # subprocess start-up included
LISTENING = re.compile(r"wslarkbot relay listening on http://[^:]+:(\d+)")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class Proc:
    """A child process whose stderr lines are read as they come and can be awaited."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wslarkbot",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_line(self, pattern: str | re.Pattern[str], timeout: float = WAIT) -> re.Match[str]:
        """The first stderr line matching ``pattern`` (already printed or still to come)."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern

        def found() -> re.Match[str] | None:
            return next((m for m in map(rx.search, self.lines) if m), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() or self._reader.done()), timeout)
        match = found()
        assert match, f"no line matching {rx.pattern!r} in:\n" + "\n".join(self.lines)
        return match

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        await self._reader


@pytest.fixture
async def procs() -> AsyncIterator[list[Proc]]:
    made: list[Proc] = []
    yield made
    for p in made:
        await p.stop()


async def start_relay_process(procs: list[Proc], port: int = 0) -> tuple[Proc, int]:
    proc = await Proc.start(
        "serve", "--host", "127.0.0.1", "--port", str(port), "--challenge-timeout", "0.9", "--heartbeat", "2"
    )
    procs.append(proc)
    match = await proc.wait_line(LISTENING)
    return proc, int(match.group(1))


async def test_client_reconnects_after_the_relay_process_is_killed_and_restarted(procs: list[Proc]) -> None:
    app = SimApp.random()
    bot = Bot(app.app_id, app.app_secret, app.verification_token, app.encrypt_key)
    relay, port = await start_relay_process(procs)
    url = f"http://127.0.0.1:{port}/hook/{app.app_id}"
    client = AsyncClient(bot, server=f"127.0.0.1:{port}", reconnect_delays=lambda: backoff(0.05, 0.5))
    async with client, FeishuSimulator(app, event_url=url) as sim:
        assert await asyncio.to_thread(client.status.wait_for, lambda s: s.hellos >= 1, WAIT)
        assert (await sim.url_verification()).ok
        relay.proc.kill()  # SIGKILL: no close frame, the client must notice by itself
        await relay.stop()
        assert await asyncio.to_thread(client.status.wait_for, lambda s: not s.connected, WAIT)
        await start_relay_process(procs, port)
        assert await asyncio.to_thread(client.status.wait_for, lambda s: s.hellos >= 2, WAIT)
        result = await sim.url_verification()
        assert result.ok, result.error
        delivered = await sim.send_text_message("after restart")
        assert delivered.delivered and delivered.retries == 0
    assert client.status.failures >= 2, "the drop and at least one refused reconnection"


async def test_wslarkbot_run_echoes_and_stops_cleanly_on_sigterm(procs: list[Proc]) -> None:
    app = SimApp.random()
    with (
        RelayThread(relay_test_config(challenge_timeout=0.9, ack_timeout=2.0)) as relay,
        FakeOpenAPI() as api,
    ):
        api.add_app(app.app_id, app.app_secret)
        assert app.encrypt_key is not None
        env = {  # secrets by environment, as --help recommends
            "WSLARKBOT_APP_SECRET": app.app_secret,
            "WSLARKBOT_ENCRYPT_KEY": app.encrypt_key,
            "WSLARKBOT_VERIFICATION_TOKEN": app.verification_token,
        }
        bot_proc = await Proc.start(
            "run",
            "--app-id",
            app.app_id,
            "--server",
            f"127.0.0.1:{relay.port}",
            "--feishu-host",
            api.url,
            env=env,
        )
        procs.append(bot_proc)
        await bot_proc.wait_line(
            rf"request URL for {app.app_id}: http://127\.0\.0\.1:{relay.port}/hook/{app.app_id}"
        )
        await bot_proc.wait_line("relay speaks protocol 2")
        url_at = next(i for i, line in enumerate(bot_proc.lines) if "request URL for" in line)
        connected_at = next(i for i, line in enumerate(bot_proc.lines) if "connected to relay" in line)
        assert connected_at < url_at, "the request URL is printed once the relay connection is up"
        async with FeishuSimulator(app, event_url=f"{relay.url}/hook/{app.app_id}") as sim:
            assert (await sim.url_verification()).ok
            assert (await sim.send_text_message("ping", message_id="om_cli1")).delivered
        calls = await asyncio.to_thread(api.wait_for_calls, "/im/v1/messages/om_cli1/reply", 1, WAIT)
        assert "echo: ping" in calls[0].json["content"]
        bot_proc.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(bot_proc.proc.wait(), WAIT) == 0
        await bot_proc.wait_line("client stopped")
    output = "\n".join(bot_proc.lines)
    for secret in env.values():
        assert secret not in output


def test_wslarkbot_run_without_a_server_exits_2_and_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from wslarkbot.cli import main

    monkeypatch.delenv("WSLARKBOT_SERVER", raising=False)
    assert main(["run", "--app-id", "cli_x", "--app-secret", "s", "--verification-token", "t"]) == 2
    assert "--server ($WSLARKBOT_SERVER)" in capsys.readouterr().err


@pytest.fixture
def relay_thread() -> Iterator[RelayThread]:
    with RelayThread(relay_test_config(challenge_timeout=0.9)) as relay:
        yield relay


def test_blocking_client_runs_in_a_thread_prints_hook_url_and_stops_from_another(
    relay_thread: RelayThread, capfd: pytest.CaptureFixture[str]
) -> None:
    app = SimApp.random()
    bot = Bot(app.app_id, app.app_secret, app.verification_token, app.encrypt_key)
    client = Client(bot, server=f"127.0.0.1:{relay_thread.port}")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            client.start()
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert client.wait_ready(WAIT)
        assert client.status.protocol == 2
        with SyncFeishuSimulator(app, event_url=f"{relay_thread.url}/hook/{app.app_id}") as sim:
            assert sim.url_verification().ok
    finally:
        assert client.stop(WAIT)
        thread.join(WAIT)
    assert not thread.is_alive() and errors == []
    assert f"{relay_thread.url}/hook/{app.app_id}" in capfd.readouterr().err


def test_graceful_stop_lets_an_in_flight_callback_answer(relay_thread: RelayThread) -> None:
    app = SimApp.random()
    bot = Bot(app.app_id, app.app_secret, app.verification_token, app.encrypt_key)
    started, gate = threading.Event(), threading.Event()

    @bot.on_card_action
    def slow(event: Any) -> dict[str, Any]:
        started.set()
        gate.wait(WAIT)
        return {"toast": {"type": "info", "content": "finished during shutdown"}}

    client = Client(bot, server=f"127.0.0.1:{relay_thread.port}")
    thread = threading.Thread(target=client.start)
    thread.start()
    results: list[Any] = []
    try:
        assert client.wait_ready(WAIT)
        with SyncFeishuSimulator(app, event_url=f"{relay_thread.url}/hook/{app.app_id}") as sim:
            sender = threading.Thread(target=lambda: results.append(sim.send_card_action({"a": 1})))
            sender.start()
            assert started.wait(WAIT)
            assert client.stop(timeout=0) is False  # requested; the handler is still running
            gate.set()
            sender.join(WAIT)
            assert client.stop(WAIT)
    finally:
        gate.set()
        client.stop(WAIT)
        thread.join(WAIT)
    assert results and results[0].ok, results
    assert results[0].response["toast"]["content"] == "finished during shutdown"
