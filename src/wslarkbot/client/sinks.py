"""Where replies, acks and nacks go: the WebSocket (protocol 2) or ``POST /sub/<request_id>`` (original).

Both are :class:`~wslarkbot.client.dispatch.ReplySink` implementations; delivery failures are logged at
warning level with the request id and counted in ``status.dropped``, never raised into the dispatcher.
"""

from __future__ import annotations

import collections
import logging
import time
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
        resend_window: seconds. An ack or nack written to a connection that then dies may never have
            left this machine, and a buffered event whose ack was lost stays unacked (the client resumes
            after it, so it is not replayed): it would fill the channel's buffer. So the acks and nacks
            sent on a connection in its last ``resend_window`` seconds are sent again, marked
            ``resend``, on the next one (:meth:`resend_unconfirmed`); the relay settles the buffered
            event and ignores a copy of an answer it already has. Default: the longest a dead
            connection goes unnoticed (ping interval + ping timeout).
        max_resend: most answers remembered for that (bounded memory).
    """

    acks = True

    def __init__(
        self,
        current: Callable[[], Awaitable[ClientConnection | None]],
        status: ClientStatus,
        ref: Callable[[str], wire.MessageRef | None] | None = None,
        *,
        resend_window: float = 20.0,
        max_resend: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._current = current
        self._status = status
        self._ref = ref or (lambda _rid: None)
        self._resend_window = resend_window
        self._clock = clock
        #: (sent at, connection, answer) of recent acks/nacks that carry a message ref
        self._recent: collections.deque[tuple[float, ClientConnection, wire.Ack | wire.Nack]] = (
            collections.deque(maxlen=max_resend)
        )

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
        if isinstance(msg, (wire.Ack, wire.Nack)) and msg.ref is not None and not msg.resend:
            self._recent.append((self._clock(), ws, msg))  # before sending: the send may be what fails
        try:
            await ws.send(frame)
        except ConnectionClosed:
            logger.warning("request %s: connection closed; %s dropped", msg.request_id, counter[:-1])
            self._status.incr("dropped")
            return
        self._status.incr(counter)

    async def resend_unconfirmed(self, ws: ClientConnection) -> int:
        """Send again, on the new connection ``ws``, the acks and nacks sent on earlier connections in the
        last ``resend_window`` seconds; returns how many. They stay remembered (now as sent on ``ws``)
        until they leave the window, in case ``ws`` dies soon too."""
        horizon = self._clock() - self._resend_window
        recent = [item for item in self._recent if item[0] >= horizon]
        again = [item for item in recent if item[1] is not ws]
        mine = [item for item in recent if item[1] is ws]
        sent = 0
        try:
            for sent_at, _old, msg in again:
                await ws.send(wire.encode_message(type(msg)(msg.request_id, msg.ref, resend=True)))
                mine.append((sent_at, ws, msg))
                sent += 1
        except ConnectionClosed:
            mine.extend(again[sent:])  # not sent: the next connection tries again
        mine.sort(key=lambda item: item[0])
        self._recent = collections.deque(mine, maxlen=self._recent.maxlen)
        if sent:
            logger.debug("sent %d acks/nacks of an earlier connection again", sent)
        return sent

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
