"""Where replies and acks go: the WebSocket (protocol 2) or ``POST /sub/<request_id>`` (original).

Both are :class:`~wslarkbot.client.dispatch.ReplySink` implementations; delivery failures are logged at
warning level with the request id and counted in ``status.dropped``, never raised into the dispatcher.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .. import wire
from .config import Endpoint
from .status import ClientStatus

__all__ = ["HttpReplySink", "WebSocketReplySink"]

logger = logging.getLogger("wslarkbot.client")


class WebSocketReplySink:
    """Protocol 2: ``reply``/``ack`` frames on the current connection.

    Args:
        current: waits (bounded) for an open protocol-2 connection, or returns None when there is none
            (stopping, or not reconnected in time). Answers of handlers that outlive a connection go over
            the next one; the relay answers ``error`` if it no longer knows the request.
        status: counters to update.
    """

    acks = True

    def __init__(
        self, current: Callable[[], Awaitable[ClientConnection | None]], status: ClientStatus
    ) -> None:
        self._current = current
        self._status = status

    async def _send(self, msg: wire.Reply | wire.Ack, counter: str) -> None:
        try:
            frame = wire.encode_message(msg)
        except (TypeError, ValueError):
            logger.error("request %s: response is not JSON-serialisable; dropped", msg.request_id)
            self._status.incr("dropped")
            return
        ws = await self._current()
        if ws is None:
            logger.warning("request %s: not connected to the relay; %s dropped", msg.request_id, counter[:-1])
            self._status.incr("dropped")
            return
        try:
            await ws.send(frame)
        except ConnectionClosed:
            logger.warning("request %s: connection closed; %s dropped", msg.request_id, counter[:-1])
            self._status.incr("dropped")
            return
        self._status.incr(counter)

    async def reply(self, request_id: str, body: Any) -> None:
        await self._send(wire.Reply(request_id, body), "replies")

    async def ack(self, request_id: str) -> None:
        await self._send(wire.Ack(request_id), "acks")


class HttpReplySink:
    """Original protocol: ``POST {protocol}://{server}/sub/{request_id}`` with the JSON body; no acks
    (an original nchan relay would publish anything sent on the socket to every subscriber)."""

    acks = False

    def __init__(
        self, http: httpx.AsyncClient, endpoint: Endpoint, status: ClientStatus, *, timeout: float = 5.0
    ) -> None:
        self._http = http
        self._endpoint = endpoint
        self._status = status
        self._timeout = timeout

    async def reply(self, request_id: str, body: Any) -> None:
        try:
            resp = await self._http.post(
                self._endpoint.reply_url(request_id),
                json=body,
                headers=self._endpoint.auth_headers(),
                timeout=self._timeout,
            )
        except (httpx.HTTPError, TypeError, ValueError) as exc:
            logger.warning("request %s: reply POST failed (%s); dropped", request_id, type(exc).__name__)
            self._status.incr("dropped")
            return
        if resp.status_code >= 300:
            logger.warning("request %s: reply POST answered HTTP %s", request_id, resp.status_code)
            self._status.incr("dropped")
            return
        self._status.incr("replies")

    async def ack(self, request_id: str) -> None:
        """Nothing to do: the original relay has no acks."""
