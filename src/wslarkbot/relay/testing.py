"""Small helpers for tests that talk to a real relay (ours or nchan) over real sockets. No mocks.

Example::

    async with run_relay(test_config()) as relay, websockets.connect(relay.ws_url("cli_a")) as ws:
        hello = await recv_json(ws)

    node = await ServeProcess.start("--port", "0", "--redis", redis_url)   # `wslarkbot serve` as a child
    ...
    node.kill()                                                            # SIGKILL, for failure tests
    await node.stop()
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from .config import RelayConfig

__all__ = [
    "LISTENING_RE",
    "SIGNED",
    "RedisServer",
    "ServeProcess",
    "free_port",
    "recv_json",
    "recv_text",
    "test_config",
]

#: The line ``wslarkbot serve`` logs once its port is bound (protocol.md §8).
LISTENING_RE = re.compile(r"wslarkbot relay listening on http://\S+:(\d+)")

#: Headers that make a webhook an event (not a url_verification), as Feishu sends them (protocol.md §1).
SIGNED = {
    "X-Lark-Request-Timestamp": "1700000000",
    "X-Lark-Request-Nonce": "nonce-abc",
    "X-Lark-Signature": "0" * 64,
}


class _Receiver(Protocol):
    async def recv(self) -> str | bytes: ...


def test_config(**changes: Any) -> RelayConfig:
    """Loopback, port 0, short waits (0.5 s), fast heartbeats; ``changes`` override."""
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "challenge_timeout": 0.5,
        "callback_timeout": 0.5,
        "ack_timeout": 0.5,
        "heartbeat": 5.0,
        "shutdown_timeout": 1.0,
    }
    base.update(changes)
    return RelayConfig(**base)


test_config.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


async def recv_text(ws: _Receiver, timeout: float = 3.0) -> str:
    """The next frame as text, or ``asyncio.TimeoutError``."""
    data = await asyncio.wait_for(ws.recv(), timeout)
    return data.decode() if isinstance(data, bytes) else data


async def recv_json(ws: _Receiver, timeout: float = 3.0) -> Any:
    """The next frame decoded as JSON."""
    return json.loads(await recv_text(ws, timeout))


class ServeProcess:
    """``python -m wslarkbot serve ...`` as a child process; its stderr lines are collected as they come.

    Use :meth:`start` (returns once the listening line was logged), then :attr:`url` / :meth:`ws_url`;
    :meth:`kill` (SIGKILL) simulates a crashed node; :meth:`stop` ends it (SIGINT, then SIGKILL).
    """

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.port = 0
        self._changed = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(
        cls, *args: str, env: dict[str, str] | None = None, timeout: float = 20.0
    ) -> ServeProcess:
        """Start ``wslarkbot serve --host 127.0.0.1 <args>`` and wait for the listening line.

        Raises:
            asyncio.TimeoutError: no listening line within ``timeout`` (the process is killed).
            AssertionError: the process exited first (its stderr is in the message).
        """
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wslarkbot",
            "serve",
            "--host",
            "127.0.0.1",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        node = cls(proc)
        try:
            node.port = int((await node.wait_line(LISTENING_RE, timeout)).group(1))
        except BaseException:
            await node.stop()
            raise
        return node

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, channels: str, proto: int | None = 2) -> str:
        """``ws://127.0.0.1:PORT/sub/<channels>[?proto=N]``."""
        return f"ws://127.0.0.1:{self.port}/sub/{channels}" + (f"?proto={proto}" if proto else "")

    async def _read(self) -> None:
        if self.proc.stderr is None:  # pragma: no cover - always a pipe
            return
        async for raw in self.proc.stderr:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def wait_line(self, pattern: str | re.Pattern[str], timeout: float = 20.0) -> re.Match[str]:
        """The first stderr line matching ``pattern`` (already logged or still to come).

        Raises:
            asyncio.TimeoutError: none within ``timeout``.
            AssertionError: the process exited without logging one.
        """
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern

        def found() -> re.Match[str] | None:
            return next((m for m in map(rx.search, self.lines) if m), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() or self._reader.done()), timeout)
        match = found()
        if match is None:
            raise AssertionError(f"no line matching {rx.pattern!r} in:\n" + "\n".join(self.lines))
        return match

    async def wait_lines(self, pattern: str, count: int, timeout: float = 20.0) -> list[str]:
        """Wait until ``count`` stderr lines match ``pattern``; those lines.

        Raises:
            asyncio.TimeoutError: fewer within ``timeout``.
        """
        rx = re.compile(pattern)

        def matching() -> list[str]:
            return [line for line in self.lines if rx.search(line)]

        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(matching()) >= count or self._reader.done()), timeout
            )
        return matching()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, sockets dropped, nothing cleaned up (a crashed node)."""
        if self.proc.returncode is None:
            self.proc.kill()

    async def stop(self, timeout: float = 10.0, *, signal_number: int = signal.SIGINT) -> int:
        """``signal_number`` (SIGINT; SIGTERM drains the same way) and wait, SIGKILL after ``timeout``;
        returns the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal_number)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.kill()
        code = await self.proc.wait()
        await self._reader
        return code


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (for servers that cannot report port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway ``redis-server`` on 127.0.0.1, its files in ``workdir``. :meth:`kill` and :meth:`start`
    again reuse the port (and, with ``aof``, the data), for outage tests.

    Args:
        aof: ``False`` (default): no persistence (``--save "" --appendonly no``); ``True``: an append-only
            file written before every reply (``--appendonly yes --appendfsync always``).

    Example::

        server = await RedisServer(tmp_path).start()
        url = server.url          # redis://127.0.0.1:PORT/0
        ...
        await server.stop()
    """

    READY = "Ready to accept connections"

    def __init__(
        self, workdir: pathlib.Path, port: int | None = None, *, aof: bool = False, args: Sequence[str] = ()
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.aof = aof
        #: more redis-server arguments (e.g. ``("--replicaof", "127.0.0.1", "6379")``)
        self.args = tuple(args)
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Future[None] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> RedisServer:
        """Start and return once it accepts connections.

        Raises:
            asyncio.TimeoutError: not ready within ``timeout``; AssertionError: it exited (its output shown).
        """
        self.proc = await asyncio.create_subprocess_exec(
            *self._command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        ready = asyncio.Event()
        self.lines = []
        # Read the log for as long as it runs: a pipe nobody reads would eventually block redis-server.
        self._reader = asyncio.ensure_future(self._read(self.proc, ready))
        try:
            await asyncio.wait_for(ready.wait(), timeout)
            if self.proc.returncode is not None or not any(self.READY in line for line in self.lines):
                raise AssertionError("redis-server exited:\n" + "\n".join(self.lines[-20:]))
        except BaseException:
            await self.stop()
            raise
        return self

    def _command(self) -> list[str]:
        persistence = (
            ("--appendonly", "yes", "--appendfsync", "always") if self.aof else ("--appendonly", "no")
        )
        return [
            "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
            *persistence,
            *("--dir", str(self.workdir)),
            *self.args,
        ]

    async def _read(self, proc: asyncio.subprocess.Process, ready: asyncio.Event) -> None:
        if proc.stdout is None:  # pragma: no cover - always a pipe
            return
        async for raw in proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())
            if self.READY in self.lines[-1]:
                ready.set()
        ready.set()

    def kill(self) -> None:
        """SIGKILL: clients see their connections drop at once."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    async def stop(self) -> None:
        """Kill it and reap the process (idempotent)."""
        if self.proc is None:
            return
        self.kill()
        await self.proc.wait()
        if self._reader is not None:
            await self._reader
        self.proc = self._reader = None

    async def wait_log(self, text: str, timeout: float = 10.0) -> None:
        """Wait until the server logged a line containing ``text``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not any(text in line for line in self.lines):
            if loop.time() > deadline or self.proc is None or self.proc.returncode is not None:
                raise AssertionError(f"redis-server never logged {text!r}:\n" + "\n".join(self.lines[-20:]))
            await asyncio.sleep(0.05)  # polling its log, which has no event to wait on


class RedisSentinel(RedisServer):
    """A ``redis-server --sentinel`` watching the master ``name`` at ``master_port`` (quorum 1, a master
    unreachable for ``down_after_ms`` is failed over), for failover tests.

    ``url`` is the ``redis+sentinel://`` URL of that master.
    """

    READY = "+monitor master"

    def __init__(
        self, workdir: pathlib.Path, master_port: int, *, name: str = "mymaster", down_after_ms: int = 1000
    ) -> None:
        conf = workdir / "sentinel.conf"
        super().__init__(workdir)
        self.conf = conf
        self.name = name
        conf.write_text(
            f"sentinel monitor {name} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
            f"sentinel failover-timeout {name} 3000\n"
            f"sentinel parallel-syncs {name} 1\n",
            encoding="utf-8",
        )

    def _command(self) -> list[str]:  # the config file first, as sentinel mode wants it
        return ["redis-server", str(self.conf), "--sentinel", "--port", str(self.port), "--bind", "127.0.0.1"]

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.name}/0"
