"""Run the relay: ``async with run_relay(config)`` for asyncio code and tests, ``RelayThread`` for sync code.

Example::

    async with run_relay(RelayConfig(host="127.0.0.1", port=0)) as relay:
        ws_url = relay.ws_url(["cli_a"], proto=2)     # ws://127.0.0.1:PORT/sub/cli_a?proto=2
        ...

    with RelayThread(RelayConfig(host="127.0.0.1", port=0)) as relay:
        print(relay.url)

Stopping and starting again on the same port works (the listening socket uses SO_REUSEADDR).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiohttp import web

from .._background import BackgroundLoop
from ..exceptions import ConfigurationError
from .app import create_app, status_snapshot
from .config import RelayConfig
from .fastpath import FastFront, FastSite
from .state import log

__all__ = ["LISTEN_BACKLOG", "RelayThread", "RunningRelay", "run_relay"]

#: Pending connections the listening socket queues (``listen()`` backlog).
LISTEN_BACKLOG = 1024


class RunningRelay:
    """A started relay. ``port`` is the real port (also when the config said 0)."""

    def __init__(
        self, app: web.Application, runner: web.AppRunner, site: web.TCPSite, host: str, port: int
    ) -> None:
        self.app = app
        self.runner = runner
        self.site = site
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the loopback address when listening on all interfaces)."""
        host = self.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def ws_url(self, channels: str | Iterable[str], proto: int | None = 2) -> str:
        """``ws://HOST:PORT/sub/<channels>[?proto=N]`` (``proto=None`` for an original-protocol client)."""
        chans = channels if isinstance(channels, str) else ",".join(channels)
        url = "ws" + self.url[len("http") :] + f"/sub/{chans}"
        return url + (f"?proto={proto}" if proto is not None else "")

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` would answer."""
        return status_snapshot(self.app)

    async def stop(self) -> None:
        """Stop accepting, answer waiting requests 503, close WebSockets 1001, release the port."""
        await self.runner.cleanup()


async def start_relay(config: RelayConfig, *, app: web.Application | None = None) -> RunningRelay:
    """Start serving ``config`` (or a prebuilt ``app``) and return once the socket listens.

    Raises:
        ConfigurationError: bad auth options; ``OSError`` when the port is taken.
    """
    if app is None:
        app = create_app(config)
    front = FastFront(app) if config.fast_path else None
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=config.shutdown_timeout
    )
    await runner.setup()
    # backlog: aiohttp's default (128) drops SYNs when thousands of bots reconnect at once (after a
    # restart); nginx uses 511. The kernel caps it at net.core.somaxconn.
    site: web.TCPSite
    if front is not None:
        site = FastSite(runner, front, config.host, config.port, reuse_address=True, backlog=LISTEN_BACKLOG)
    else:
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True, backlog=LISTEN_BACKLOG)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server = site._server
    sockets: list[socket.socket] = list(getattr(server, "sockets", None) or [])
    if not sockets:
        await runner.cleanup()
        raise ConfigurationError("relay started without a listening socket")
    port = int(sockets[0].getsockname()[1])
    log.info("wslarkbot relay listening on http://%s:%d", config.host, port)
    return RunningRelay(app, runner, site, config.host, port)


@contextlib.asynccontextmanager
async def run_relay(
    config: RelayConfig, *, app: web.Application | None = None
) -> AsyncIterator[RunningRelay]:
    """Serve the relay for the duration of the ``async with`` block (see the module docstring)."""
    relay = await start_relay(config, app=app)
    try:
        yield relay
    finally:
        await relay.stop()


class RelayThread:
    """The relay on a :class:`BackgroundLoop`, for sync tests and embedding.

    ``start()`` returns once it listens; ``stop()`` shuts it down gracefully; ``start()`` may be called
    again after ``stop()`` (same port if the config names one, e.g. ``config.replace(port=relay.port)``).
    """

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self._bg: BackgroundLoop | None = None
        self._relay: RunningRelay | None = None

    @property
    def relay(self) -> RunningRelay:
        if self._relay is None:
            raise ConfigurationError("RelayThread is not started")
        return self._relay

    @property
    def port(self) -> int:
        return self.relay.port

    @property
    def url(self) -> str:
        return self.relay.url

    def ws_url(self, channels: str | Iterable[str], proto: int | None = 2) -> str:
        return self.relay.ws_url(channels, proto)

    def status(self) -> dict[str, Any]:
        relay = self.relay

        async def snap() -> dict[str, Any]:
            return relay.status()

        if self._bg is None:  # pragma: no cover - set together with _relay
            raise ConfigurationError("RelayThread is not started")
        return self._bg.run(snap(), timeout=5)

    def start(self, timeout: float = 10.0) -> RelayThread:
        if self._relay is not None:
            raise ConfigurationError("RelayThread already started")
        if self._bg is None or not self._bg.running:
            self._bg = BackgroundLoop(name="wslarkbot-relay")
        self._relay = self._bg.run(start_relay(self.config), timeout=timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (idempotent). The next ``start()`` reuses the port the last run had."""
        if self._relay is None or self._bg is None:
            return
        relay, self._relay = self._relay, None
        if self.config.port == 0:
            self.config = self.config.replace(port=relay.port)
        try:
            self._bg.run(relay.stop(), timeout=timeout)
        finally:
            self._bg.stop()
            self._bg = None

    def __enter__(self) -> RelayThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
