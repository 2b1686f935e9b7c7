"""Where replies, acks and nacks go: the WebSocket (protocol 2) or ``POST /sub/<request_id>`` (original).

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
        ref: the message (channel, id) of a request id, copied into the answer so the relay can mark a
            buffered event acked even on a later connection.
    """

    acks = True

    def __init__(
        self,
        current: Callable[[], Awaitable[ClientConnection | None]],
        status: ClientStatus,
        ref: Callable[[str], wire.MessageRef | None] | None = None,
    ) -> None:
        self._current = current
        self._status = status
        self._ref = ref or (lambda _rid: None)

    async def _send(self, msg: wire.Reply | wire.Ack | wire.Nack, counter: str) -> None:
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
        await self._send(wire.Reply(request_id, body, self._ref(request_id)), "replies")

    async def ack(self, request_id: str) -> None:
        await self._send(wire.Ack(request_id, self._ref(request_id)), "acks")

    async def nack(self, request_id: str) -> None:
        await self._send(wire.Nack(request_id, self._ref(request_id)), "nacks")


class HttpReplySink:
    """Original protocol: ``POST {protocol}://{server}/sub/{request_id}`` with the JSON body.

    Args:
        acks: False (default): ``ack`` does nothing, the relay has no acks (and an original nchan relay
            would publish anything sent on the socket to every subscriber). True: ``ack`` POSTs ``{}``,
            for envelopes nchan holds open until a reply comes (no ``X-Lark-Signature``: nchan treats
            the request as a challenge and answers Feishu 408 after its wait when nothing is posted).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        endpoint: Endpoint,
        status: ClientStatus,
        *,
        timeout: float = 5.0,
        acks: bool = False,
    ) -> None:
        self._http = http
        self._endpoint = endpoint
        self._status = status
        self._timeout = timeout
        self.acks = acks

    async def _post(self, request_id: str, body: Any, counter: str) -> None:
        try:
            resp = await self._http.post(
                self._endpoint.reply_url(request_id),
                json=body,
                headers=self._endpoint.auth_headers(),
                timeout=self._timeout,
            )
        except (httpx.HTTPError, TypeError, ValueError) as exc:
            logger.warning(
                "request %s: %s POST failed (%s); dropped", request_id, counter[:-1], type(exc).__name__
            )
            self._status.incr("dropped")
            return
        if resp.status_code >= 300:
            logger.warning("request %s: %s POST answered HTTP %s", request_id, counter[:-1], resp.status_code)
            self._status.incr("dropped")
            return
        self._status.incr(counter)

    async def reply(self, request_id: str, body: Any) -> None:
        await self._post(request_id, body, "replies")

    async def ack(self, request_id: str) -> None:
        """POST ``{}`` when ``acks`` is true (the relay answers Feishu 200 with it); else nothing."""
        if self.acks:
            await self._post(request_id, {}, "acks")

    async def nack(self, request_id: str) -> None:
        """Nothing: the original protocol has no negative answer (the relay times out, Feishu retries)."""
