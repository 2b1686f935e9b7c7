"""Real processes for the fault tests (tests/test_faults_*.py): a bot process, its handler log, relay
counters, a raw WebSocket that never reads, and a per-event tally. No mocks.

Run as a script, this file *is* the bot process::

    python tests/fault_harness.py --port P --app-id ... --secret ... --token ... --encrypt-key ... \
        --dedup /tmp/x/dedup.sqlite|off --out /tmp/x/handled.log [--slow PREFIX=SECONDS] [--claim-ttl S] \
        [--group NAME]

It runs ``Bot(dedup=SqliteDeduplicator(path))`` (or no dedup) + ``AsyncClient`` and appends to ``--out``,
one line each: ``ready <pid> <hellos>`` whenever a protocol-2 connection is open, ``start <pid> <name>``
when a text handler begins and ``done <pid> <name>`` when it ends (name: the text's first word), or
``fail <pid> <name>`` when ``--fail-once`` makes it raise.
``write`` goes to the kernel at once, so a SIGKILL loses nothing that was logged. A card action is
answered with the toast ``clicked <action.value.name>``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import logging
import os
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from wslarkbot.relay.testing import ServeProcess
from wslarkbot.sim import payloads
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.feishu import FeishuSimulator
from wslarkbot.sim.protocol import DeliveryResult

HARNESS = Path(__file__).resolve()

# -- the bot process ---------------------------------------------------------------------------------


def _bot_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--encrypt-key", default=None)
    parser.add_argument("--dedup", required=True, help="the SQLite store's path, or 'off' for no dedup")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--slow", default="", help="PREFIX=SECONDS: texts starting with PREFIX sleep that long"
    )
    parser.add_argument(
        "--fail-once",
        default="",
        help="PREFIX: a text starting with PREFIX raises the first time it is handled",
    )
    parser.add_argument(
        "--drop-every", type=float, default=0.0, help="abort the relay connection (no close frame) every S s"
    )
    parser.add_argument("--claim-ttl", type=float, default=None)
    parser.add_argument("--ack-after", type=float, default=2.5)
    parser.add_argument("--group", default=None, help="join this subscriber group (?group=)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from wslarkbot.bot import Bot
    from wslarkbot.cards import CardActionResponse, Toast
    from wslarkbot.client import AsyncClient, backoff
    from wslarkbot.dedup import SqliteDeduplicator
    from wslarkbot.events import CardAction, MessageEvent

    slow_prefix, _, slow_seconds = args.slow.partition("=")
    store_kwargs: dict[str, Any] = {} if args.claim_ttl is None else {"claim_ttl": args.claim_ttl}
    store = None if args.dedup == "off" else SqliteDeduplicator(args.dedup, **store_kwargs)
    bot = Bot(args.app_id, args.secret, args.token, args.encrypt_key, dedup=store, ordering=None)
    fd = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()

    def log(kind: str, text: str) -> None:
        os.write(fd, f"{kind} {pid} {text}\n".encode())

    failed: set[str] = set()

    @bot.on_card_action
    def clicked(event: CardAction) -> CardActionResponse:  # the answer names the card that was clicked
        return CardActionResponse(toast=Toast(f"clicked {(event.value or {}).get('name')}"))

    @bot.on_text
    async def handle(event: MessageEvent) -> None:
        text = (event.text or "").split(" ", 1)[0]  # the event's name; the rest may be padding
        log("start", text)
        if slow_prefix and text.startswith(slow_prefix):
            await asyncio.sleep(float(slow_seconds))
        if args.fail_once and text.startswith(args.fail_once) and text not in failed:
            failed.add(text)
            log("fail", text)
            raise RuntimeError(f"{text}: failing once, as asked")
        log("done", text)

    async def main() -> None:
        client = AsyncClient(
            bot,
            server=f"127.0.0.1:{args.port}",
            protocol="http",
            reconnect_delays=lambda: backoff(0.05, 0.3),
            ping_interval=1.0,
            ping_timeout=1.0,
            close_timeout=1.0,
            ack_after=args.ack_after,
            **({"group": args.group} if args.group else {}),
        )
        async with client:
            if args.drop_every:

                async def drop() -> None:  # a flaky network: the TCP connection vanishes mid-stream
                    while True:
                        await asyncio.sleep(args.drop_every)
                        conn = client._conn
                        if conn is not None and conn.ws.transport is not None:
                            log("drop", str(client.status.hellos))
                            conn.ws.transport.abort()

                dropper = asyncio.ensure_future(drop())  # runs until the process ends
                dropper.add_done_callback(lambda t: None)
            hellos = 0
            while True:  # log every (re)connection, so the test can wait for it
                await asyncio.to_thread(
                    client.status.wait_for, lambda s, n=hellos: s.hellos > n and s.connected
                )
                hellos = client.status.hellos
                log("ready", str(hellos))

    asyncio.run(main())
    return 0


# -- what the test process uses ----------------------------------------------------------------------


async def wait_until(
    condition: Callable[[], Any] | Callable[[], Awaitable[Any]], timeout: float, what: str, poll: float = 0.02
) -> Any:
    """Poll ``condition`` (sync or async) until it returns something truthy (returned); AssertionError
    after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(poll)


@dataclasses.dataclass(frozen=True)
class Line:
    kind: str
    pid: int
    text: str


class HandlerLog:
    """The lines every bot process appended to one file (all processes share it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[Line]:
        if not self.path.exists():
            return []
        out = []
        for raw in self.path.read_text().splitlines():
            kind, pid, text = [*raw.split(" ", 2), ""][:3]
            out.append(Line(kind, int(pid), text))
        return out

    def texts(self, kind: str = "done", pid: int | None = None) -> list[str]:
        return [ln.text for ln in self.lines() if ln.kind == kind and (pid is None or ln.pid == pid)]

    def done_counts(self) -> Counter[str]:
        return Counter(self.texts("done"))

    async def wait_ready(self, pid: int, timeout: float = 15.0, count: int = 1) -> None:
        await wait_until(
            lambda: sum(1 for ln in self.lines() if ln.kind == "ready" and ln.pid == pid) >= count,
            timeout,
            f"bot {pid} connected ({count})",
        )


class BotProcess:
    """``python tests/fault_harness.py ...``: a real bot process (see the module docstring)."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(
        cls,
        port: int,
        app: Any,
        workdir: Path,
        *,
        log: HandlerLog,
        slow: str = "",
        fail_once: str = "",
        drop_every: float = 0.0,
        claim_ttl: float | None = None,
        group: str | None = None,
        dedup: bool = True,
        wait_ready: bool = True,
    ) -> BotProcess:
        args = [
            str(HARNESS),
            "--port", str(port),
            "--app-id", app.app_id,
            "--secret", app.app_secret,
            "--token", app.verification_token,
            "--dedup", str(workdir / "dedup.sqlite") if dedup else "off",
            "--out", str(log.path),
        ]  # fmt: skip
        if app.encrypt_key:
            args += ["--encrypt-key", app.encrypt_key]
        if slow:
            args += ["--slow", slow]
        if fail_once:
            args += ["--fail-once", fail_once]
        if drop_every:
            args += ["--drop-every", str(drop_every)]
        if claim_ttl is not None:
            args += ["--claim-ttl", str(claim_ttl)]
        if group:
            args += ["--group", group]
        stderr_path = workdir / f"bot-{time.monotonic_ns()}.stderr"
        with stderr_path.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *args, stdin=asyncio.subprocess.DEVNULL, stdout=err, stderr=err
            )
        bot = cls(proc, stderr_path)
        if wait_ready:
            try:
                await log.wait_ready(bot.pid)
            except BaseException:
                await bot.kill()
                raise AssertionError("bot did not connect:\n" + bot.stderr()) from None
        return bot

    def stderr(self, tail: int = 3000) -> str:
        """The process's log (stderr), its last ``tail`` characters."""
        return self.stderr_path.read_text(errors="replace")[-tail:]

    def duplicates_skipped(self) -> int:
        """How many deliveries its dedup store recognised as already handled (or running)."""
        return self.stderr(tail=10**9).count("not handled again")

    async def kill(self) -> None:
        """SIGKILL (no graceful anything) and reap."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


async def relay_status(port: int) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(f"http://127.0.0.1:{port}/status", timeout=2.0)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


def pending_claims(db: Path) -> list[tuple[str, float]]:
    """``(key, expires)`` of the claims in the bot's SQLite store that are pending (not done)."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key, expires FROM wslarkbot_dedup WHERE done = 0").fetchall()
    return [(str(k), float(e)) for k, e in rows]


def raw_subscribe(port: int, channel: str, *, proto: int = 2, rcvbuf: int = 4096) -> socket.socket:
    """A TCP socket that completed the WebSocket handshake on ``/sub/<channel>`` and will read nothing
    more (a tiny receive buffer, so the relay's side fills up quickly). Blocking, loopback only."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: caps the window
    sock.settimeout(5.0)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /sub/{channel}?proto={proto} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:  # read the 101 response only (byte by byte: not one frame more)
        chunk = sock.recv(1)
        if not chunk:
            raise AssertionError(f"handshake refused: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise AssertionError(f"handshake refused: {head!r}")
    return sock


def drain_until_closed(sock: socket.socket, timeout: float = 5.0) -> int:
    """Read everything until EOF/reset; the number of bytes read. Raises TimeoutError if still open."""
    sock.settimeout(timeout)
    total = 0
    try:
        while chunk := sock.recv(65536):
            total += len(chunk)
    except ConnectionResetError:
        pass
    return total


@dataclasses.dataclass
class Tally:
    """Per event (by its text): what Feishu (the simulator) saw and what the handlers saw."""

    sent: list[str]
    delivered: set[str]
    dropped: set[str]
    statuses: dict[str, list[int | None]]
    handled: Counter[str]

    @classmethod
    def of(cls, texts: list[str], results: dict[str, Any], log: HandlerLog) -> Tally:
        return cls(
            sent=list(texts),
            delivered={t for t in texts if results[t].delivered},
            dropped={t for t in texts if results[t].dropped},
            statuses={t: [a.status for a in results[t].attempts] for t in texts},
            handled=log.done_counts(),
        )

    @property
    def lost(self) -> list[str]:
        """Sent, not handled by any handler."""
        return [t for t in self.sent if self.handled[t] == 0]

    @property
    def twice(self) -> dict[str, int]:
        return {t: n for t, n in self.handled.items() if n > 1}

    @property
    def retried(self) -> list[str]:
        return [t for t in self.sent if len(self.statuses[t]) > 1]

    def summary(self) -> str:
        return (
            f"sent={len(self.sent)} delivered={len(self.delivered)} dropped={sorted(self.dropped)} "
            f"lost={self.lost} twice={self.twice} retried={len(self.retried)}"
        )


# -- one test's processes ---------------------------------------------------------------------------

#: Feishu's schedule (15 s, 5 min, 1 h, 6 h) x 2e-4 = 3 ms, 60 ms, 0.72 s, 4.3 s: a restart of a couple
#: of seconds is covered by the retries, as a real outage of minutes is by Feishu's.
TIME_SCALE = 2e-4
#: Relay flags shared by the tests: the relay gives up on an ack after 1 s (504), pings every 1 s.
RELAY_ARGS = ("--ack-timeout", "1.0", "--heartbeat", "1", "--retry-after", "1")


class World:
    """The processes of one test; everything still running is SIGKILLed at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.app = SimApp.random()
        self.log = HandlerLog(tmp_path / "handled.log")
        self.relays: list[ServeProcess] = []
        self.bots: list[BotProcess] = []
        self.port = 0

    async def relay(self, *args: str) -> ServeProcess:
        """``wslarkbot serve`` on a free port, or on the same port as before (a restart)."""
        node = await ServeProcess.start("--port", str(self.port), *RELAY_ARGS, *args)
        self.relays.append(node)
        self.port = node.port
        return node

    async def bot(self, **kwargs: Any) -> BotProcess:
        bot = await BotProcess.start(self.port, self.app, self.tmp, log=self.log, **kwargs)
        self.bots.append(bot)
        return bot

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{self.app.app_id}"

    def sim(self, **kwargs: Any) -> FeishuSimulator:
        kwargs.setdefault("time_scale", TIME_SCALE)
        return FeishuSimulator(self.app, event_url=self.hook_url, **kwargs)

    async def status(self) -> dict[str, Any]:
        return await relay_status(self.port)

    async def wait_status(
        self, what: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> None:
        async def check() -> bool:
            try:
                return pred(await self.status())
            except OSError:
                return False

        await wait_until(check, timeout, f"relay /status: {what}")

    async def close(self) -> None:
        for bot in self.bots:
            if bot.proc.returncode is None:
                bot.proc.send_signal(signal.SIGCONT)  # a frozen one must be able to die
            await bot.kill()
        for node in self.relays:
            node.kill()
            await node.stop()


async def burst(
    sim: FeishuSimulator, app: SimApp, names: list[str], interval: float, pad: int = 0
) -> dict[str, asyncio.Task[DeliveryResult]]:
    """Push one text event per name at a steady rate (pacing, not synchronisation); each is retried by
    the simulator until delivered or dropped. Returns the delivery tasks by name."""
    tasks: dict[str, asyncio.Task[DeliveryResult]] = {}
    for name in names:
        text = name + (" " + "x" * pad if pad else "")
        tasks[name] = sim.deliver_async(payloads.text_message(app, text))
        await asyncio.sleep(interval)
    return tasks


async def results_of(sim: FeishuSimulator, tasks: dict[str, asyncio.Task[DeliveryResult]]) -> dict[str, Any]:
    await sim.wait_idle(timeout=30)
    return {name: task.result() for name, task in tasks.items()}


def assert_exactly_once(tally: Tally) -> None:
    assert not tally.dropped, f"Feishu dropped events: {tally.summary()}"
    assert not tally.lost, f"events never handled: {tally.summary()}"
    assert not tally.twice, f"events handled twice: {tally.summary()}"
    assert tally.delivered == set(tally.sent), tally.summary()


if __name__ == "__main__":
    sys.exit(_bot_main(sys.argv[1:]))
