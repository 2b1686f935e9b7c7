"""The relay's aiohttp routes: thin fronts over the shared logic of :mod:`.publish` and :mod:`.subscribe`.

The fast path (:mod:`.fastpath`) serves the same routes over the same logic; what an aiohttp request adds
is read here and only here: the body (:func:`read_body`), the WebSocket (:func:`handle_subscribe`), the
conversion of an :class:`~.answer.Answer` into a response (:func:`to_response`) and the error middleware
(:func:`internal_errors`), which gives a failing handler the fast path's answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import HttpVersion10, WSCloseCode, WSMsgType, web

from .answer import Answer, Origin, error_answer
from .limits import LimitExceeded
from .publish import (
    check_reply_target,
    gateway_for,
    publish_webhook,
    reject,
    resolve_reply,
    too_big,
    webhook_channel,
)
from .state import RelayState, internal_error
from .subscribe import connected, disconnected, on_client_frame, open_subscription, set_nodelay, too_slow
from .subscriber import Subscriber
from .ws_policy import CLOSE_TIMEOUT, CLOSE_TRY_AGAIN_LATER, ws_failed

__all__ = [
    "STATE_KEY",
    "SWITCHED_KEY",
    "handle_reply_post",
    "handle_subscribe",
    "handle_webhook",
    "internal_errors",
    "read_body",
    "to_response",
]

STATE_KEY: web.AppKey[RelayState] = web.AppKey("wslarkbot_relay_state", RelayState)
#: Set on a request once it became a WebSocket: an error after that cannot be answered with HTTP.
SWITCHED_KEY: web.RequestKey[bool] = web.RequestKey("wslarkbot_switched", bool)


def to_response(answer: Answer) -> web.Response:
    """The aiohttp response for ``answer`` (``Content-Type: application/json; charset=utf-8``)."""
    from aiohttp import web

    return web.Response(
        status=answer.status,
        body=answer.body,
        headers=answer.headers,
        content_type="application/json",
        charset="utf-8",
    )


@web.middleware
async def internal_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """A handler that raises (a bug) gets the fast path's answer: a JSON 500, and the same log line.

    A request line without a version (HTTP/0.9, which aiohttp's parser takes and llhttp's strict mode
    does not) is refused 400 before any route runs: HTTP/1.0 and 1.1 only, as on the fast path.
    """
    if request.version < _HTTP_1_0:
        return to_response(error_answer(400, "HTTP/1.0 or HTTP/1.1 requests only"))
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException:
        raise
    except Exception:
        answer = internal_error(request.method, request.path)
        if request.get(SWITCHED_KEY):
            raise
        return to_response(answer)


_HTTP_1_0 = HttpVersion10


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes.

    Raises:
        LimitExceeded: 413 when the body (declared or actual) is larger.
    """
    if request.content_length is not None and request.content_length > limit:
        raise too_big(limit)
    data = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise too_big(limit)


def _origin(request: web.Request) -> Origin:
    return Origin(request.method, request.path, request.remote)


async def handle_webhook(request: web.Request) -> web.StreamResponse:
    """``POST /hook/<app_id>`` and ``POST /org_<name>/<app_id>``: publish, then maybe wait for the bot."""
    state = request.app[STATE_KEY]
    origin = _origin(request)
    org = request.match_info["org"]
    app_id = request.match_info["app_id"]
    channel = webhook_channel(state, origin, org, app_id)
    if isinstance(channel, Answer):
        return to_response(channel)
    try:
        raw = await read_body(request, state.config.max_body_bytes)
    except LimitExceeded as exc:
        return to_response(reject(state, origin, exc, channel=channel))
    gateway = gateway_for(state, org, app_id)
    if gateway is not None:
        return to_response(await gateway.webhook_answer(app_id, request.headers, raw))
    return to_response(
        await publish_webhook(state, origin, channel, org, app_id, request.headers.items(), raw)
    )


async def handle_reply_post(request: web.Request) -> web.StreamResponse:
    """``POST /sub/<request_id>`` with a JSON body: the original client's reply; the body is the response."""
    state = request.app[STATE_KEY]
    origin = _origin(request)
    request_id = request.match_info["target"]
    refused = check_reply_target(state, origin, request_id)
    if refused is not None:
        return to_response(refused)
    try:
        raw = await read_body(request, state.config.max_body_bytes)
    except LimitExceeded as exc:
        return to_response(reject(state, origin, exc, request_id=request_id))
    return to_response(await resolve_reply(state, origin, request_id, raw))


async def handle_subscribe(request: web.Request) -> web.StreamResponse:
    """``GET /sub/<channels>``: a WebSocket subscription (see the module docstring)."""
    state = request.app[STATE_KEY]
    cfg = state.config
    ws = web.WebSocketResponse(
        heartbeat=cfg.heartbeat or None,  # ws_policy's heartbeat rule, as aiohttp implements it
        # aiohttp refuses a message of max_msg_size bytes already; the limit is the largest one accepted
        max_msg_size=cfg.max_ws_message_bytes + 1,
        autoping=True,
        # No permessage-deflate: the envelope is encoded once and shared by all subscribers; per-connection
        # compression would cost CPU per subscriber per frame and a deflate context per connection.
        compress=False,
    )
    origin = Origin(request.method, request.path, request.remote)
    sub = await open_subscription(
        state,
        origin,
        request.match_info["target"],
        request.query,
        request.headers,
        upgrade=ws.can_prepare(request).ok,
    )
    if isinstance(sub, Answer):
        return to_response(sub)

    writer: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        request[SWITCHED_KEY] = True  # an error from here on closes the WebSocket, no HTTP answer
        set_nodelay(request.transport)
        writer = asyncio.get_running_loop().create_task(_writer(ws, sub))
        sub.on_overload = _kick_slow(state, request, ws, writer)
        connected(state, sub, ws, request.query.get("since", ""))
        await _read_loop(state, ws, sub)
    finally:
        sub.close()
        state.connections.pop(sub, None)
        await state.hub.unsubscribe(sub)
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        if not ws.closed and ws.prepared:
            await ws.close()
        if writer is not None:
            disconnected(state, sub, ws.close_code)
    return ws


async def _read_loop(state: RelayState, ws: web.WebSocketResponse, sub: Subscriber) -> None:
    async for msg in ws:
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            await on_client_frame(state, sub, msg.data)
        elif msg.type == WSMsgType.ERROR:
            exc = ws.exception()
            code = getattr(exc, "code", None)  # aiohttp's WebSocketError carries the close code it sends
            code = code if isinstance(code, int) else int(ws.close_code or WSCloseCode.PROTOCOL_ERROR)
            ws_failed(state, sub.peer, code, str(exc) or type(exc).__name__)


async def _writer(ws: web.WebSocketResponse, sub: Subscriber) -> None:
    while True:
        frame = await sub.next_frame()
        if frame is None:
            return
        await ws.send_str(frame)


def _kick_slow(
    state: RelayState, request: web.Request, ws: web.WebSocketResponse, writer: asyncio.Task[None]
) -> Callable[[Subscriber], None]:
    """The overload callback: log once, close the connection 1013 (abort it if even that stalls)."""

    def on_overload(sub: Subscriber) -> None:
        too_slow(state, sub)

        async def kick() -> None:
            await state.hub.unsubscribe(sub)
            writer.cancel()
            try:
                await asyncio.wait_for(
                    ws.close(code=CLOSE_TRY_AGAIN_LATER, message=b"subscriber too slow"), CLOSE_TIMEOUT
                )
            except (asyncio.TimeoutError, ConnectionError):
                if request.transport is not None:
                    request.transport.abort()

        task = asyncio.get_running_loop().create_task(kick())
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)

    return on_overload
