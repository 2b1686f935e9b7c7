"""Connected lark-oapi clients per app, and delivery of one event to them. No sockets here.

Implements the server side of long-connection.md §1 ("Answering an event", "Ping/pong", "Fragmentation") and
the delivery rules of §3 ("Several clients": one client chosen at random, Feishu's cluster mode). A
:class:`Connection` only needs a ``send(bytes)`` coroutine, so tests can drive the registry without a
socket; the aiohttp adapter in ``server.py`` feeds it the client's binary messages through
:meth:`ClientRegistry.receive`.

Delivery contract (:meth:`ClientRegistry.deliver`):

* ``"one"``: pick a random open connection, send, wait for the frame with the same ``message_id``. If that
  connection dies before answering, fail over to another one not tried yet while the deadline allows.
* ``"broadcast"``: send to every open connection; the first ``{"code":200}`` answer wins (beyond Feishu).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ...exceptions import ProtocolError, WslarkbotError
from .config import GatewayConfig
from .frame import METHOD_CONTROL, METHOD_DATA, Frame, decode_frame, encode_frame, event_frames, pong_frame
from .race import first_success

__all__ = ["Connection", "ConnectionLost", "DeliveryTimeout", "ClientRegistry", "NoClientConnected"]

log = logging.getLogger("wslarkbot.relay.longconn")


class NoClientConnected(WslarkbotError):
    """No open long connection for the app (the webhook answers 503 with Retry-After)."""


class DeliveryTimeout(WslarkbotError):
    """The client did not answer before the deadline (the webhook answers 504, Feishu re-pushes events)."""


class ConnectionLost(WslarkbotError):
    """The connection closed while an answer was awaited."""


class Connection:
    """One lark-oapi client. ``send`` writes one binary WebSocket message."""

    def __init__(self, app_id: str, device_id: str, send: Callable[[bytes], Awaitable[None]]) -> None:
        self.app_id = app_id
        self.device_id = device_id
        self._send = send
        self._lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.closed = False

    def __repr__(self) -> str:
        return f"<Connection app={self.app_id} device={self.device_id}{' closed' if self.closed else ''}>"

    async def send_frames(self, frames: list[Frame]) -> None:
        """Write ``frames`` back to back (fragments of one message stay together)."""
        async with self._lock:
            for frame in frames:
                if self.closed:
                    raise ConnectionLost(f"{self!r} closed")
                try:
                    await self._send(encode_frame(frame))
                except (ConnectionError, RuntimeError) as exc:  # aiohttp: ClientConnectionResetError etc.
                    raise ConnectionLost(f"{self!r}: write failed") from exc

    async def send_raw(self, data: bytes) -> None:
        """Write one already-encoded frame (a pong)."""
        async with self._lock:
            if not self.closed:
                await self._send(data)

    def expect(self, message_id: str) -> asyncio.Future[dict[str, Any]]:
        """Register interest in the answer to ``message_id``."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        return future

    def forget(self, message_id: str) -> None:
        future = self._pending.pop(message_id, None)
        if future is not None and not future.done():
            future.cancel()

    def resolve(self, message_id: str, answer: dict[str, Any]) -> bool:
        future = self._pending.pop(message_id, None)
        if future is None or future.done():
            return False
        future.set_result(answer)
        return True

    def mark_closed(self) -> None:
        """Fail every pending wait with :class:`ConnectionLost`."""
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(f"{self!r} closed before answering"))
        self._pending.clear()


def _parse_answer(payload: bytes | None) -> dict[str, Any]:
    """The client's reply payload: ``{"code":200[,"data":b64]}`` or ``{"code":500}`` (§1 "Answering")."""
    try:
        answer = json.loads(payload or b"")
    except ValueError:
        return {"code": 500}
    return answer if isinstance(answer, dict) else {"code": 500}


class ClientRegistry:
    """Per-app registry of open connections, connection limits, and event delivery.

    Args:
        config: the gateway config (limits, fragment size, ClientConfig).
        rng: chooses the connection in ``"one"`` mode (inject a seeded one in tests).
        clock: milliseconds clock for the ``timestamp`` header.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        service_id: int | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.service_id = service_id if service_id is not None else random.randrange(1, 2**31)
        self._rng = rng or random.Random()
        self._clock = clock
        self._connections: dict[str, list[Connection]] = {}
        self._reserved: dict[str, int] = {}
        self._seq = itertools.count(1)
        self._changed = asyncio.Condition()

    # --- registry ---------------------------------------------------------------------------------

    def connections(self, app_id: str) -> list[Connection]:
        """Open connections of ``app_id``, oldest first."""
        return [c for c in self._connections.get(app_id, []) if not c.closed]

    def all_connections(self) -> list[Connection]:
        return [c for conns in self._connections.values() for c in conns if not c.closed]

    def reserve(self, app_id: str) -> bool:
        """Claim a slot under the app's ``max_connections`` before the handshake completes."""
        app = self.config.apps[app_id]
        if len(self.connections(app_id)) + self._reserved.get(app_id, 0) >= app.max_connections:
            return False
        self._reserved[app_id] = self._reserved.get(app_id, 0) + 1
        return True

    def release(self, app_id: str) -> None:
        """Give back a slot claimed by :meth:`reserve` (after :meth:`add` or a failed handshake)."""
        self._reserved[app_id] = max(0, self._reserved.get(app_id, 0) - 1)

    async def add(self, conn: Connection) -> None:
        self._connections.setdefault(conn.app_id, []).append(conn)
        async with self._changed:
            self._changed.notify_all()

    async def remove(self, conn: Connection) -> None:
        conn.mark_closed()
        conns = self._connections.get(conn.app_id, [])
        if conn in conns:
            conns.remove(conn)
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_connections(self, app_id: str, count: int, timeout: float) -> None:
        """Wait until ``app_id`` has exactly ``count`` open connections (tests, readiness probes).

        Raises:
            TimeoutError: not reached within ``timeout`` seconds.
        """
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.connections(app_id)) == count), timeout
            )

    # --- frames from clients ----------------------------------------------------------------------

    def receive(self, conn: Connection, data: bytes) -> bytes | None:
        """Handle one binary message from ``conn``; returns bytes to send back (a pong), if any."""
        try:
            frame = decode_frame(data)
        except ProtocolError as exc:
            log.warning("long connection %s sent an undecodable frame: %s", conn.device_id, exc)
            return None
        kind = frame.header("type")
        if frame.method == METHOD_CONTROL:
            if kind == "ping":
                return encode_frame(pong_frame(frame.service, self.config.client_config()))
            return None
        if frame.method == METHOD_DATA:
            message_id = frame.header("message_id")
            if message_id is None or not conn.resolve(message_id, _parse_answer(frame.payload)):
                log.debug("long connection %s answered unknown message %s", conn.device_id, message_id)
        return None

    # --- delivery ---------------------------------------------------------------------------------

    def _frames(self, payload: bytes, message_id: str, trace_id: str) -> list[Frame]:
        return event_frames(
            payload,
            message_id=message_id,
            trace_id=trace_id,
            service=self.service_id,
            seq_id=next(self._seq),
            fragment_bytes=self.config.fragment_bytes,
            timestamp_ms=int(self._clock() * 1000),
        )

    async def deliver(
        self, app_id: str, payload: bytes, *, timeout: float, trace_id: str | None = None
    ) -> dict[str, Any]:
        """Push ``payload`` (plaintext event JSON) to the app's client(s) and return the parsed answer.

        Raises:
            NoClientConnected: nobody is connected (or every tried connection died).
            DeliveryTimeout: no answer within ``timeout`` seconds.
        """
        message_id = uuid.uuid4().hex
        frames = self._frames(payload, message_id, trace_id or uuid.uuid4().hex)
        deadline = asyncio.get_running_loop().time() + timeout
        if self.config.apps[app_id].delivery == "broadcast":
            return await self._broadcast(app_id, frames, message_id, deadline)
        return await self._one(app_id, frames, message_id, deadline)

    async def _one(
        self, app_id: str, frames: list[Frame], message_id: str, deadline: float
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        tried: set[Connection] = set()
        while True:
            candidates = [c for c in self.connections(app_id) if c not in tried]
            if not candidates:
                raise NoClientConnected(f"no open long connection for {app_id}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeliveryTimeout(f"no answer from {app_id} in time")
            conn = self._rng.choice(candidates)
            tried.add(conn)
            future = conn.expect(message_id)
            try:
                await asyncio.wait_for(conn.send_frames(frames), remaining)
                return await asyncio.wait_for(future, deadline - loop.time())
            except ConnectionLost:
                log.info("long connection %s lost message %s; failing over", conn.device_id, message_id)
                continue
            except asyncio.TimeoutError:
                raise DeliveryTimeout(f"no answer from {app_id} in time") from None
            finally:
                conn.forget(message_id)

    async def _broadcast(
        self, app_id: str, frames: list[Frame], message_id: str, deadline: float
    ) -> dict[str, Any]:
        conns = self.connections(app_id)
        if not conns:
            raise NoClientConnected(f"no open long connection for {app_id}")
        loop = asyncio.get_running_loop()

        async def one(conn: Connection) -> dict[str, Any]:
            future = conn.expect(message_id)
            try:
                await conn.send_frames(frames)
                return await future
            finally:
                conn.forget(message_id)

        race = await first_success((one(c) for c in conns), deadline=deadline)
        if race.answer is not None:
            return race.answer
        if not self.connections(app_id) and loop.time() < deadline:
            raise NoClientConnected(f"every long connection of {app_id} closed")
        raise DeliveryTimeout(f"no answer from {app_id} in time")

    async def close(self) -> None:
        """Fail all pending deliveries (shutdown)."""
        for conn in self.all_connections():
            await self.remove(conn)
