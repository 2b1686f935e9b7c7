"""Feishu's webhook POSTs and original clients' ``POST /sub/<request_id>`` replies.

The logic returns an :class:`~.answer.Answer` and is shared by both servers: the aiohttp routes
(:mod:`.routes`) and the fast path (:mod:`.fastpath`) parse the request their own way and call
:func:`webhook_channel` + :func:`publish_webhook` (or hand a gateway app's webhook, :func:`gateway_for`, to
the gateway), or :func:`check_reply_target` + :func:`resolve_reply`. No I/O of its own, no aiohttp.

One log line per webhook: request id, channel, kind, delivered count, status, latency. No bodies.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable

from .. import _json
from ..exceptions import ProtocolError
from ..wire import CHANNEL_RE, HOOK_ORG_ID, REQUEST_ID_RE, Envelope, filter_headers, is_org_channel
from .answer import SUCCESS, Answer, Origin, error_answer
from .limits import LimitExceeded
from .outcomes import WebhookOutcome, answered_by, refused_by
from .pending import TIMED_OUT, Outcome, PendingEntry, Resolution, wait_outcome
from .policy import WaitKind, classify, timeout_for
from .state import GatewayPort, RelayState, log, refusal

__all__ = [
    "NACKED",
    "check_reply_target",
    "gateway_for",
    "publish_webhook",
    "reject",
    "resolve_reply",
    "too_big",
    "webhook_channel",
]

_BUFFERED = Answer(200, b'{"msg":"buffered"}')
_REPLY_OK = Answer(200, b'{"ok": true}')
#: The answer to a request the bot nacked: one and the same whatever the bot's reason (no oracle).
NACKED = error_answer(500, "the bot did not handle this request")


def too_big(limit: int) -> LimitExceeded:
    """The 413 for a body over ``limit`` bytes."""
    # Built only when needed: an exception object per webhook showed up in the profile.
    return LimitExceeded(413, "max_body_bytes", f"request body larger than {limit} bytes")


def reject(state: RelayState, origin: Origin, exc: LimitExceeded, **context: object) -> Answer:
    """Count, log (one line an operator can act on) and answer a refused request."""
    return refusal(
        state,
        exc,
        "rejected %s %s from %s: %d %s (%s) %s",
        origin.method,
        origin.path[:100],
        origin.remote,
        exc.status,
        exc.reason,
        exc.limit,
        " ".join(f"{k}={v}" for k, v in context.items()),
    )


def _buffered(state: RelayState) -> Answer:
    state.stats.buffered += 1
    return _BUFFERED


def _reply_answer(outcome: Outcome) -> Answer:
    if outcome.kind == "reply":
        return Answer(200, (outcome.body or "{}").encode("utf-8"))
    return SUCCESS


def webhook_channel(state: RelayState, origin: Origin, org: str, app_id: str) -> str | Answer:
    """The channel ``POST /<org>/<app_id>`` publishes to, or the refusal (404, 400, 503 when closing)."""
    if org != HOOK_ORG_ID and not is_org_channel(org):
        return reject(
            state,
            origin,
            LimitExceeded(404, "route", "not found: POST /hook/<app_id> or /org_<name>/<app_id>"),
        )
    for name in (org, app_id):
        if not CHANNEL_RE.match(name):
            return reject(
                state, origin, LimitExceeded(400, "channel_syntax", f"invalid channel name {name[:70]!r}")
            )
    if state.closing:
        return reject(state, origin, LimitExceeded(503, "shutdown", "relay is shutting down"))
    channel = app_id if org == HOOK_ORG_ID else org
    over = state.tenants.check_event(channel)  # relay/tenants.py; nothing to do when none is configured
    return channel if over is None else reject(state, origin, over, channel=channel)


def gateway_for(state: RelayState, org: str, app_id: str) -> GatewayPort | None:
    """The long-connection gateway if ``POST /<org>/<app_id>`` is one of its apps' webhooks, else None.

    Apps listed in ``--gateway-config`` are served over Feishu's long-connection protocol instead
    (docs/long-connection.md); the body limit applies to them too.
    """
    gateway = state.gateway
    return gateway if org == HOOK_ORG_ID and gateway is not None and gateway.serves(app_id) else None


async def publish_webhook(
    state: RelayState,
    origin: Origin,
    channel: str,
    org: str,
    app_id: str,
    headers: Iterable[tuple[str, str]],
    raw: bytes,
) -> Answer:
    """Publish one webhook to ``channel`` (from :func:`webhook_channel`) and wait for what it needs.

    Args:
        headers: the request's ``(name, value)`` pairs in arrival order, names in any case.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    forwarded = filter_headers(headers)
    request_id = forwarded.get("x-request-id", "")
    if not REQUEST_ID_RE.match(request_id):
        request_id = uuid.uuid4().hex
    elif state.hub.is_pending(request_id):
        fresh = uuid.uuid4().hex
        log.warning("webhook request id %s is already pending; using %s", request_id, fresh)
        request_id = fresh
    try:
        envelope = Envelope.from_request(
            forwarded, raw, app_id=app_id, org_id=org, request_id=request_id, filtered=True
        )
    except ProtocolError:
        return reject(
            state, origin, LimitExceeded(400, "json", "request body is not UTF-8 JSON"), channel=channel
        )
    kind = classify(envelope.headers, envelope.body)

    # Open the waiting entry BEFORE publishing: a reply that races ahead of us is kept in its future.
    # An event that nobody on the channel can answer (original clients only, in this process) needs none.
    entry: PendingEntry | None = None
    if kind is not WaitKind.EVENT or state.hub.may_answer(channel):
        for _attempt in range(3):
            try:
                entry = await state.hub.open_pending(request_id, channel)
                break
            except KeyError:
                request_id = envelope.headers["x-request-id"] = uuid.uuid4().hex
            except LimitExceeded as exc:
                return reject(state, origin, exc, channel=channel, request_id=request_id)
        else:  # pragma: no cover - three uuid4 collisions
            return error_answer(500, "could not allocate a request id")

    status = 500
    delivered_n = 0
    result = WebhookOutcome.ERROR
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
            status, result = exc.status, refused_by(exc)
            return reject(state, origin, exc, channel=channel, request_id=request_id)
        delivered_n = delivery.subscribers
        state.stats.published += 1
        state.stats.delivered += delivered_n
        if not delivered_n:
            if event.buffered:
                status, result = 200, WebhookOutcome.BUFFERED
                return _buffered(state)
            state.stats.undelivered += 1
            status, result = 503, WebhookOutcome.NO_SUBSCRIBER
            return error_answer(
                503,
                f"no subscriber connected for channel {channel}",
                {"Retry-After": str(state.config.retry_after)},
            )
        if entry is None or (kind is WaitKind.EVENT and not delivery.protocol2):
            # entry is None: an event nobody could answer (a hub that says so does not suspend, so no
            # protocol-2 subscriber can have appeared since).
            status, result = 200, WebhookOutcome.DELIVERED
            return SUCCESS
        # The deadline counts from publishing: a shared hub may have spent some of it collecting
        # delivery reports from other nodes.
        outcome = await wait_outcome(entry, max(0.0, deadline - loop.time()))
        if outcome is TIMED_OUT:
            if event.buffered:  # kept: replayed to the next subscriber that connects (docs/delivery.md)
                status, result = 200, WebhookOutcome.BUFFERED_TIMEOUT
                return _buffered(state)
            state.stats.timeouts += 1
            status, result = 504, WebhookOutcome.TIMEOUT
            return error_answer(504, f"no reply from the bot within {timeout:g} s")
        if outcome.kind == "shutdown":
            if event.buffered and state.hub.durable_buffers:  # the buffer outlives this node
                status, result = 200, WebhookOutcome.BUFFERED_SHUTDOWN
                return _buffered(state)
            status, result = 503, WebhookOutcome.SHUTDOWN
            return error_answer(503, "relay is shutting down", {"Retry-After": str(state.config.retry_after)})
        if event.buffered:  # settled: acked or replied, or (nack) Feishu delivers it again
            await state.hub.mark_acked(channel, event.entry_id)
        if outcome.kind == "nack":
            state.stats.nacks += 1
            status, result = 500, answered_by(outcome.kind, outcome.via)
            return NACKED
        if outcome.kind == "ack":
            state.stats.acks += 1
        else:
            state.stats.replies += 1
            if kind is WaitKind.EVENT:
                # An encrypted body looked like an event; a bot that replies with a body says it was a
                # callback (an event is acked): shown as one in the log, metrics and dashboard.
                kind = WaitKind.CALLBACK
        status, result = 200, answered_by(outcome.kind, outcome.via)
        return _reply_answer(outcome)
    finally:
        if entry is not None:
            await state.hub.cancel_pending(request_id)
        latency = loop.time() - started
        kind_name = kind._value_  # kind.value is a Python-level property call on Python 3.11
        state.observer.webhook_answered(channel, request_id, kind_name, delivered_n, status, result, latency)
        if log.isEnabledFor(logging.INFO):  # skip building the arguments at --log-level WARNING
            log.info(
                "webhook request_id=%s channel=%s kind=%s delivered=%d status=%d outcome=%s latency_ms=%.1f",
                request_id,
                channel,
                kind_name,
                delivered_n,
                status,
                result._value_,
                latency * 1000,
                # Fields for --log-json (cli.py); plain-text logs show them in the message.
                extra={
                    "request_id": request_id,
                    "channel": channel,
                    "status": status,
                    "latency_ms": round(latency * 1000, 1),
                },
            )


def check_reply_target(state: RelayState, origin: Origin, request_id: str) -> Answer | None:
    """None if ``request_id`` is a well-formed request id, else the 400."""
    if not REQUEST_ID_RE.match(request_id):
        return reject(state, origin, LimitExceeded(400, "request_id", "invalid request id"))
    return None


async def resolve_reply(state: RelayState, origin: Origin, request_id: str, raw: bytes) -> Answer:
    """Answer the waiting webhook ``request_id`` with the JSON ``raw``; 404 unknown, 409 already answered."""
    try:
        text = raw.decode("utf-8")
        _json.loads(text)  # accepts exactly what json.loads accepts (wslarkbot/_json.py), faster
    except (UnicodeDecodeError, ValueError):
        return reject(state, origin, LimitExceeded(400, "json", "reply body is not UTF-8 JSON"))
    try:
        result = await state.hub.resolve(request_id, Outcome("reply", text, via="http"))
    except LimitExceeded as exc:
        return reject(state, origin, exc, request_id=request_id)
    if result is Resolution.OK:
        return _REPLY_OK
    status = 404 if result is Resolution.UNKNOWN else 409
    return reject(state, origin, LimitExceeded(status, "reply", f"{result.value}: {request_id}"))
