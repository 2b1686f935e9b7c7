"""HTTP side of the relay: Feishu's webhook POSTs and original clients' ``POST /sub/<request_id>`` replies.

One log line per webhook: request id, channel, kind, delivered count, status, latency. No bodies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

from aiohttp import web

from ..exceptions import ProtocolError
from ..wire import CHANNEL_RE, HOOK_ORG_ID, REQUEST_ID_RE, Envelope, is_org_channel
from .limits import BackendUnavailable, LimitExceeded
from .longconn.server import GATEWAY_KEY
from .pending import Outcome, Resolution
from .policy import WaitKind, classify, timeout_for
from .state import STATE_KEY, RelayState, json_error, log

__all__ = ["handle_reply_post", "handle_webhook", "read_body"]

_SUCCESS = '{"msg":"success"}'
_BUFFERED = '{"msg":"buffered"}'


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes.

    Raises:
        LimitExceeded: 413 when the body (declared or actual) is larger.
    """
    if request.content_length is not None and request.content_length > limit:
        raise _too_big(limit)
    data = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise _too_big(limit)


def _too_big(limit: int) -> LimitExceeded:
    # Built only when needed: an exception object per webhook showed up in the profile.
    return LimitExceeded(413, "max_body_bytes", f"request body larger than {limit} bytes")


def _reject(state: RelayState, request: web.Request, exc: LimitExceeded, **context: object) -> web.Response:
    state.stats.rejected += 1
    extra = " ".join(f"{k}={v}" for k, v in context.items())
    # An unreachable backend is logged once per state change by the hub, not once per request.
    log.log(
        logging.DEBUG if isinstance(exc, BackendUnavailable) else logging.WARNING,
        "rejected %s %s from %s: %d %s (%s) %s",
        request.method,
        request.path[:100],
        request.remote,
        exc.status,
        exc.reason,
        exc.limit,
        extra,
    )
    headers = {"Retry-After": str(state.config.retry_after)} if exc.status == 503 else None
    return json_error(exc.status, exc.reason, headers=headers)


def _buffered(state: RelayState) -> web.Response:
    state.stats.buffered += 1
    return web.Response(text=_BUFFERED, content_type="application/json")


def _reply_response(outcome: Outcome) -> web.Response:
    if outcome.kind == "reply":
        return web.Response(text=outcome.body or "{}", content_type="application/json")
    return web.Response(text=_SUCCESS, content_type="application/json")


async def handle_webhook(request: web.Request) -> web.StreamResponse:
    """``POST /hook/<app_id>`` and ``POST /org_<name>/<app_id>``: publish, then maybe wait for the bot."""
    state = request.app[STATE_KEY]
    loop = asyncio.get_running_loop()
    started = loop.time()
    org = request.match_info["org"]
    app_id = request.match_info["app_id"]
    if org != HOOK_ORG_ID and not is_org_channel(org):
        return _reject(
            state,
            request,
            LimitExceeded(404, "route", "not found: POST /hook/<app_id> or /org_<name>/<app_id>"),
        )
    for name in (org, app_id):
        if not CHANNEL_RE.match(name):
            return _reject(
                state, request, LimitExceeded(400, "channel_syntax", f"invalid channel name {name[:70]!r}")
            )
    if state.closing:
        return _reject(state, request, LimitExceeded(503, "shutdown", "relay is shutting down"))
    channel = app_id if org == HOOK_ORG_ID else org
    try:
        raw = await read_body(request, state.config.max_body_bytes)
    except LimitExceeded as exc:
        return _reject(state, request, exc, channel=channel)
    # Apps listed in --gateway-config are served over Feishu's long-connection protocol instead
    # (docs/long-connection.md); the body limit above applies to them too.
    gateway = request.app.get(GATEWAY_KEY)
    if org == HOOK_ORG_ID and gateway is not None and gateway.serves(app_id):
        return await gateway.webhook_response(app_id, request.headers, raw)

    request_id = request.headers.get("X-Request-Id", "")
    if not REQUEST_ID_RE.match(request_id):
        request_id = uuid.uuid4().hex
    elif state.hub.is_pending(request_id):
        fresh = uuid.uuid4().hex
        log.warning("webhook request id %s is already pending; using %s", request_id, fresh)
        request_id = fresh
    try:
        envelope = Envelope.from_request(
            request.headers, raw, app_id=app_id, org_id=org, request_id=request_id
        )
    except ProtocolError:
        return _reject(
            state, request, LimitExceeded(400, "json", "request body is not UTF-8 JSON"), channel=channel
        )
    kind = classify(envelope.headers, envelope.body)

    # Open the waiting entry BEFORE publishing: a reply that races ahead of us is kept in its future.
    for _attempt in range(3):
        try:
            entry = await state.hub.open_pending(request_id, channel)
            break
        except KeyError:
            request_id = envelope.headers["x-request-id"] = uuid.uuid4().hex
        except LimitExceeded as exc:
            return _reject(state, request, exc, channel=channel, request_id=request_id)
    else:  # pragma: no cover - three uuid4 collisions
        return json_error(500, "could not allocate a request id")

    status = 500
    delivered_n = 0
    outcome_name = "error"
    try:
        timeout = timeout_for(kind, state.config)
        deadline = loop.time() + timeout
        try:
            # Only events are buffered: a challenge or callback answer cannot reach Feishu later.
            event = await state.hub.assign(
                channel, request_id, envelope.to_json(), bufferable=kind is WaitKind.EVENT
            )
            delivery = await state.hub.deliver(event, timeout=timeout)
        except LimitExceeded as exc:
            status, outcome_name = exc.status, exc.limit
            return _reject(state, request, exc, channel=channel, request_id=request_id)
        delivered_n = delivery.subscribers
        state.stats.published += 1
        state.stats.delivered += delivered_n
        if not delivered_n:
            if event.buffered:
                status, outcome_name = 200, "buffered"
                return _buffered(state)
            state.stats.undelivered += 1
            status, outcome_name = 503, "no-subscriber"
            return json_error(
                503,
                f"no subscriber connected for channel {channel}",
                headers={"Retry-After": str(state.config.retry_after)},
            )
        if kind is WaitKind.EVENT and not delivery.protocol2:
            status, outcome_name = 200, "delivered"
            return web.Response(text=_SUCCESS, content_type="application/json")
        try:
            # The deadline counts from publishing: a shared hub may have spent some of it collecting
            # delivery reports from other nodes.
            remaining = max(0.0, deadline - loop.time())
            outcome = await asyncio.wait_for(asyncio.shield(entry.future), remaining)
        except asyncio.TimeoutError:
            if event.buffered:  # kept: replayed to the next subscriber that connects (docs/delivery.md)
                status, outcome_name = 200, "buffered-timeout"
                return _buffered(state)
            state.stats.timeouts += 1
            status, outcome_name = 504, "timeout"
            return json_error(504, f"no reply from the bot within {timeout:g} s")
        if outcome.kind == "shutdown":
            if event.buffered and state.hub.durable_buffers:  # the buffer outlives this node
                status, outcome_name = 200, "buffered-shutdown"
                return _buffered(state)
            status, outcome_name = 503, "shutdown"
            return json_error(
                503, "relay is shutting down", headers={"Retry-After": str(state.config.retry_after)}
            )
        if outcome.kind == "ack":
            state.stats.acks += 1
        else:
            state.stats.replies += 1
        if event.buffered:
            await state.hub.mark_acked(channel, event.entry_id)
        status, outcome_name = 200, f"{outcome.kind}-{outcome.via}"
        return _reply_response(outcome)
    finally:
        await state.hub.cancel_pending(request_id)
        latency = loop.time() - started
        state.observer.webhook_answered(
            channel, request_id, kind.value, delivered_n, status, outcome_name, latency
        )
        if log.isEnabledFor(logging.INFO):  # skip building the arguments at --log-level WARNING
            log.info(
                "webhook request_id=%s channel=%s kind=%s delivered=%d status=%d outcome=%s latency_ms=%.1f",
                request_id,
                channel,
                kind.value,
                delivered_n,
                status,
                outcome_name,
                latency * 1000,
                # Fields for --log-json (cli.py); plain-text logs show them in the message.
                extra={
                    "request_id": request_id,
                    "channel": channel,
                    "status": status,
                    "latency_ms": round(latency * 1000, 1),
                },
            )


async def handle_reply_post(request: web.Request) -> web.StreamResponse:
    """``POST /sub/<request_id>`` with a JSON body: the original client's reply; the body is the response."""
    state = request.app[STATE_KEY]
    request_id = request.match_info["target"]
    if not REQUEST_ID_RE.match(request_id):
        return _reject(state, request, LimitExceeded(400, "request_id", "invalid request id"))
    try:
        raw = await read_body(request, state.config.max_body_bytes)
    except LimitExceeded as exc:
        return _reject(state, request, exc, request_id=request_id)
    try:
        text = raw.decode("utf-8")
        json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return _reject(state, request, LimitExceeded(400, "json", "reply body is not UTF-8 JSON"))
    try:
        result = await state.hub.resolve(request_id, Outcome("reply", text, via="http"))
    except LimitExceeded as exc:
        return _reject(state, request, exc, request_id=request_id)
    if result is Resolution.OK:
        return web.json_response({"ok": True})
    status = 404 if result is Resolution.UNKNOWN else 409
    return _reject(state, request, LimitExceeded(status, "reply", f"{result.value}: {request_id}"))
