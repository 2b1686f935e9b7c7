"""The fast path's listening side: :class:`FastSite` (an aiohttp site whose sockets start in
:class:`~.connection.FastConnection`) and :class:`FastFront`, what its connections share: the relay state,
aiohttp's handler factory for hand-offs, the open connections, heartbeats and shutdown.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from ...exceptions import ConfigurationError
from ..routes import STATE_KEY
from ..state import log
from .connection import FastConnection

__all__ = ["KEEPALIVE_TIMEOUT", "FastFront", "FastSite"]

#: Seconds an HTTP connection may sit idle between requests (aiohttp's default keepalive_timeout).
KEEPALIVE_TIMEOUT = 75.0
#: Connections the heartbeat sweep visits before it lets other callbacks run.
_SWEEP_SLICE = 256


class FastFront:
    """What the fast path's connections of one relay share.

    Create it before the app starts (it adds a shutdown hook to ``app``).
    """

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.state = app[STATE_KEY]
        self.conns: set[FastConnection] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = False
        #: run each request's first step at once, without a task, when the hub never suspends
        self.eager = self.state.hub.synchronous
        self._server: web.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        # After the relay's own hook (which answers waiting requests and closes WebSockets 1001).
        app.on_shutdown.append(self._on_shutdown)

    def protocol(self) -> FastConnection:
        return FastConnection(self)

    def aiohttp_handler(self) -> asyncio.Protocol:
        """A fresh aiohttp request handler, for a connection handed over."""
        if self._server is None:  # pragma: no cover - set in start()
            raise ConfigurationError("FastFront is not started")
        return self._server()

    def track(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def start(self, server: web.Server) -> None:
        self._server = server
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Heartbeats (ping idle WebSockets, drop silent ones) and idle keep-alive timeouts."""
        heartbeat = self.state.config.heartbeat
        period = heartbeat / 2 if heartbeat else KEEPALIVE_TIMEOUT / 4
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            conns = list(self.conns)
            # In slices, letting webhooks in between: 10,000 bots in one go would stall the loop ~10 ms.
            for start in range(0, len(conns), _SWEEP_SLICE):
                for conn in conns[start : start + _SWEEP_SLICE]:
                    conn.heartbeat(now, heartbeat, KEEPALIVE_TIMEOUT)
                await asyncio.sleep(0)

    def stop_listening(self) -> None:
        """Close idle HTTP connections; busy ones close after their answer."""
        self.closing = True
        for conn in list(self.conns):
            if conn.is_idle():
                conn.close_transport()

    async def _on_shutdown(self, app: web.Application) -> None:
        self.stop_listening()
        if self._sweeper is not None:
            self._sweeper.cancel()
        pending = list(self.tasks)
        if pending:
            _done, late = await asyncio.wait(pending, timeout=self.state.config.shutdown_timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning("fast path: %d requests still running at shutdown were cancelled", len(late))
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()


class FastSite(web.TCPSite):
    """A ``TCPSite`` whose accepted sockets start in the fast path (:class:`FastFront`)."""

    __slots__ = ("_front",)

    def __init__(self, runner: web.BaseRunner, front: FastFront, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._front = front

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        if server is None:  # pragma: no cover - the runner is set up first
            raise ConfigurationError("FastSite started before its runner was set up")
        self._front.start(server)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._front.protocol,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:  # pragma: no cover
            self._bound_port = self._port

    async def stop(self) -> None:
        await super().stop()
        self._front.stop_listening()
