"""WebSocket side of the relay: ``GET /sub/<ch1,ch2,...>``, shared by both servers (no I/O, no aiohttp).

Per connection (:mod:`.routes` for aiohttp, :mod:`.fastpath` for the fast path): one reader and one writer
draining the subscriber's buffer, so publishing never waits on a slow socket. Checks, in order: channel
syntax and count (400), WebSocket upgrade (426), credentials (401/403), subscribers per channel (503).
Then, with ``?proto=2``, the hello frame; then the replay of buffered channels (``?since=``,
docs/delivery.md), then envelopes; ``?group=`` joins a subscriber group. Text ``PING`` -> ``PONG``.
Protocol-2 ``reply``/``ack``/``nack`` frames answer waiting requests of the connection's own channels;
refused ones get an ``error`` frame.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping

from .. import __version__, _json
from ..exceptions import ProtocolError
from ..wire import (
    PING,
    PONG,
    PROTOCOL_VERSION,
    Ack,
    Hello,
    Nack,
    ServerError,
    encode_message,
    parse_client_message,
)
from .answer import Answer, Origin
from .auth import REALM, WRONG_PASSWORD, login_keys, throttled
from .buffer import parse_since
from .groups import GROUP_RE
from .hub import Subscriber
from .limits import LimitExceeded, parse_channel_list
from .pending import Outcome, Resolution
from .state import Closable, RelayState, log, refusal

__all__ = [
    "SERVER_NAME",
    "connected",
    "disconnected",
    "on_client_frame",
    "open_subscription",
    "refuse",
    "set_nodelay",
    "too_slow",
]

SERVER_NAME = f"wslarkbot/{__version__}"


def refuse(state: RelayState, origin: Origin, exc: LimitExceeded) -> Answer:
    """Count, log and answer a refused subscription (401 with ``WWW-Authenticate``, 503 ``Retry-After``)."""
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
    if exc.status == 426:
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
    return refusal(
        state,
        exc,
        "subscribe refused from %s to %s: %d %s (%s)",
        origin.remote,
        origin.path[:100],
        exc.status,
        exc.reason,
        exc.limit,
        headers=headers,
    )


def too_slow(state: RelayState, sub: Subscriber) -> None:
    """Count and log a subscriber that could not keep up (the caller closes it 1013)."""
    state.stats.rejected += 1
    log.warning(
        "subscriber %s (%s) too slow: %d bytes buffered (max_subscriber_buffer_bytes=%d); closing 1013",
        sub.peer,
        ",".join(sub.channels),
        sub.buffered_bytes,
        sub.max_buffer_bytes,
    )


def _delivery_options(
    query: Mapping[str, str], channels: tuple[str, ...]
) -> tuple[str | None, dict[str, str]]:
    """``?group=<name>`` and ``?since=<channel>:<id>[,...]`` (docs/delivery.md).

    Raises:
        LimitExceeded: 400 for a malformed group name or ``since``.
    """
    group = query.get("group") or None
    if group is not None and not GROUP_RE.match(group):
        raise LimitExceeded(400, "group", f"invalid group name {group[:70]!r}")
    try:
        since = parse_since(query.get("since", ""), channels)
    except ValueError as exc:
        raise LimitExceeded(400, "since", str(exc)) from None
    return group, since


def set_nodelay(transport: asyncio.BaseTransport | None) -> None:
    """TCP_NODELAY on a subscriber's socket: frames go out at once, not after the previous one's ACK.

    The event loops set it on accepted sockets already; this makes sure for the long-lived ones.
    """
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


async def open_subscription(
    state: RelayState,
    origin: Origin,
    target: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    *,
    upgrade: bool,
) -> Subscriber | Answer:
    """Check a ``GET /sub/<target>`` and subscribe it to the hub, or say why not.

    Shared by the aiohttp route and the fast path; the caller then completes the WebSocket handshake,
    calls :func:`connected`, feeds client frames to :func:`on_client_frame`, and at the end unsubscribes
    and calls :func:`disconnected`.

    Args:
        upgrade: whether the request is a valid WebSocket upgrade (426 if not).
    """
    cfg = state.config
    try:
        channels = parse_channel_list(target, max_channels=cfg.max_channels_per_subscription)
        group, since = _delivery_options(query, channels)
    except LimitExceeded as exc:
        return refuse(state, origin, exc)
    if not upgrade:
        return refuse(
            state, origin, LimitExceeded(426, "upgrade", "GET /sub/<channels> needs a WebSocket upgrade")
        )
    if state.closing:
        return refuse(state, origin, LimitExceeded(503, "shutdown", "relay is shutting down"))
    for channel in channels:
        over = state.tenants.check_subscriber(channel, state.hub.fanout.subscriber_count(channel))
        if over is not None:
            return refuse(state, origin, over)
    keys = login_keys(headers, origin.remote) if state.access.protected(channels) else ()
    try:
        # Failed logins on every node sharing this hub's backend count (the node's own count is in check)
        wait = await state.hub.login_wait(keys, state.config.auth_fail_limit) if keys else None
        if wait is not None:
            raise throttled(wait)
        user = await asyncio.to_thread(state.access.check, channels, headers, origin.remote)
    except LimitExceeded as exc:
        if exc.limit == WRONG_PASSWORD and keys:
            await state.hub.login_failed(keys, state.config.auth_fail_window)
        return refuse(state, origin, exc)

    proto = PROTOCOL_VERSION if query.get("proto", "") == str(PROTOCOL_VERSION) else 1
    peer = f"{origin.remote}" + (f" user={user}" if user else "")
    sub = Subscriber(
        channels,
        protocol=proto,
        peer=peer,
        max_buffer_bytes=cfg.max_subscriber_buffer_bytes,
        group=group,
        since=since,
    )
    if proto >= 2:
        extra = {"group": group} if group else {}
        hello = Hello(protocol=PROTOCOL_VERSION, server=SERVER_NAME, channels=channels, extra=extra)
        sub.offer(encode_message(hello))
    try:
        await state.hub.subscribe(sub)
    except LimitExceeded as exc:
        return refuse(state, origin, exc)
    return sub


def connected(state: RelayState, sub: Subscriber, conn: Closable, since: str) -> None:
    """Book a subscription whose handshake completed: counters, observer, log line, shutdown list."""
    state.connections[sub] = conn
    state.stats.subscribes += 1
    state.observer.subscriber_connected(sub)
    log.info(
        "subscribe peer=%s channels=%s proto=%d%s%s",
        sub.peer,
        ",".join(sub.channels),
        sub.protocol,
        f" group={sub.group}" if sub.group else "",
        f" since={since[:200]}" if sub.since else "",
    )


def disconnected(state: RelayState, sub: Subscriber, close_code: int | None) -> None:
    """Book the end of a subscription :func:`connected` booked (after the hub unsubscribed it)."""
    state.connections.pop(sub, None)
    state.stats.unsubscribes += 1
    state.observer.subscriber_disconnected(sub, close_code)
    log.info("unsubscribe peer=%s channels=%s close_code=%s", sub.peer, ",".join(sub.channels), close_code)


async def on_client_frame(state: RelayState, sub: Subscriber, data: str | bytes) -> None:
    """Handle one text/binary frame from a subscriber: ``PING``, or a protocol-2 ``reply``/``ack``/``nack``.

    An answer to a buffered event settles its buffer entry whatever it says (a ``nack`` too: Feishu is
    answered non-2xx and delivers it again, so keeping it as well would deliver it twice), and even when
    the webhook was answered long ago.
    """
    try:
        msg = parse_client_message(data)
    except ProtocolError as exc:
        state.stats.rejected += 1
        log.warning("bad frame from %s: %s", sub.peer, exc)
        sub.offer(encode_message(ServerError(str(exc)[:200])))
        return
    if msg == PING:
        sub.offer(PONG)
        return
    if isinstance(msg, str):  # PONG
        return
    if isinstance(msg, Ack):
        outcome = Outcome("ack", via="ws")
    elif isinstance(msg, Nack):
        outcome = Outcome("nack", via="ws")
    else:
        body = msg.body if msg.body is not None else {}
        outcome = Outcome("reply", _json.dumps(body), via="ws")  # compact, non-ASCII as is (orjson if there)
    # A group delivery or buffered event this connection got: answered now, so not handed on if the
    # connection closes, and (buffered) not replayed again.
    item = sub.inflight.pop(msg.request_id)
    ref = (item.channel, item.entry_id) if item is not None and item.buffered else None
    theirs = msg.ref
    if ref is None and theirs is not None and theirs.channel in sub.channel_set:
        # The envelope came on an earlier connection; the client says which message it answers.
        ref = (theirs.channel, theirs.id) if state.hub.buffers_channel(theirs.channel) else None
    if ref is not None:
        await state.hub.mark_acked(*ref)
    try:
        result = await state.hub.resolve(msg.request_id, outcome, channels=sub.channel_set)
    except LimitExceeded as exc:  # the shared hub's backend is unreachable; the request may time out
        state.stats.rejected += 1
        sub.offer(encode_message(ServerError(exc.reason, msg.request_id)))
        return
    if result is Resolution.OK:
        state.observer.subscriber_answered(sub, msg.request_id, outcome.kind)
    elif ref is not None and result is not Resolution.FORBIDDEN:
        # A replayed event (Feishu was answered long ago) or a late ack of a buffered one: accepted.
        log.debug("%s from %s for buffered %s:%s accepted", outcome.kind, sub.peer, *ref)
    elif isinstance(msg, (Ack, Nack)) and msg.resend and result is not Resolution.FORBIDDEN:
        # A copy the client sent again after reconnecting; the first one arrived, or it is too late now.
        log.debug("resent %s from %s for %s: %s", outcome.kind, sub.peer, msg.request_id, result.value)
    else:
        state.stats.rejected += 1
        log.warning(
            "%s from %s refused: %s (request_id=%s)", outcome.kind, sub.peer, result.value, msg.request_id
        )
        sub.offer(encode_message(ServerError(result.value, msg.request_id)))
