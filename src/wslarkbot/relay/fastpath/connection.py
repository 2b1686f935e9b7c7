"""One accepted socket of the fast path: an ``asyncio.Protocol`` that serves the hot routes itself.

A connection starts in HTTP mode. Each complete request the strict parser (:mod:`.http1`) understands and
that is for a hot route runs the relay's shared logic in one task:

* ``POST /hook/<app_id>``, ``POST /org_<name>/<app_id>``: :func:`~..publish.webhook_channel` +
  :func:`~..publish.publish_webhook`;
* ``POST /sub/<request_id>``: :func:`~..publish.check_reply_target` + :func:`~..publish.resolve_reply`;
* ``GET /sub/<channels>`` with a valid WebSocket upgrade: :func:`~..subscribe.open_subscription`, then the
  connection switches to WebSocket mode.

Any other request (other routes, gateway apps, bodies over the limit, anything the parser declines) hands
the connection to aiohttp at that request boundary: ``transport.set_protocol()`` to aiohttp's own handler,
which gets the buffered bytes and serves the rest of the connection as it always did.

In WebSocket mode there is no writer task: a live frame offered while nothing is queued goes straight to
the transport (:meth:`FastConnection._write_now`); otherwise the subscriber queues it and calls
:meth:`FastConnection._drain`, which writes queued frames while the transport accepts them
(``pause_writing`` stops, and ``resume_writing`` restarts, the draining; the subscriber's
``max_buffer_bytes`` bounds what waits). The encoded frame of an event is shared by all subscribers it is
written to.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from ...wire import HOOK_ORG_ID
from ..answer import Answer, Origin, error_answer
from ..publish import check_reply_target, gateway_for, publish_webhook, resolve_reply, webhook_channel
from ..state import internal_error, log
from ..subscribe import (
    connected,
    disconnected,
    on_client_frame,
    open_subscription,
    set_nodelay,
    too_slow,
)
from ..subscriber import Subscriber
from ..ws_policy import (
    CLOSE_ABNORMAL,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NO_STATUS,
    CLOSE_TIMEOUT,
    CLOSE_TRY_AGAIN_LATER,
    Beat,
    heartbeat_step,
    missed_heartbeat,
    ws_failed,
)
from .eager import start_eagerly
from .http1 import MAX_HEAD_BYTES, Head, parse_head, response
from .wsframe import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    WebSocketError,
    accept_key,
    close_payload,
    encode_frame,
    parse_close,
    valid_key,
)

if TYPE_CHECKING:
    from .front import FastFront

__all__ = ["FastConnection"]

# Routes the fast path serves.
_WEBHOOK = 1
_REPLY = 2
_SUBSCRIBE = 3

#: Buffered request bytes beyond which reading pauses while a request is being answered (pipelining).
_READ_HIGH_WATER = 256 * 1024
#: The first two bytes of a TLS record carrying a handshake (a ClientHello): content type 22, version 3.x.
_TLS_HANDSHAKE = b"\x16\x03"
#: when the last "TLS on the plain port" warning was logged (monotonic s), one per process
_tls_logged = [-1e9]
#: Client frames queued for handling beyond which reading pauses.
_FRAMES_HIGH_WATER = 64

# The last frame encoded and its bytes: an event fanned out to N subscribers is encoded once.
_last_frame: tuple[str, bytes] = ("", b"")


def _encoded(frame: str) -> bytes:
    global _last_frame
    last = _last_frame
    if last[0] is frame:
        return last[1]
    data = encode_frame(frame.encode("utf-8"))
    _last_frame = (frame, data)
    return data


def _query(query: str) -> dict[str, str] | None:
    """``a=1&b=2`` as a dict (first value wins, as aiohttp's ``request.query.get``); None if escaped."""
    if not query:
        return {}
    if "+" in query:  # form-encoded spaces: let aiohttp decode it
        return None
    out: dict[str, str] = {}
    for part in query.split("&"):
        key, _, value = part.partition("=")
        out.setdefault(key, value)
    return out


class FastConnection(asyncio.Protocol):
    """One accepted connection (see the module docstring)."""

    __slots__ = (
        "_abort_handle",
        "_buf",
        "_busy",
        "_draining",
        "_eof",
        "_frames",
        "_frames_busy",
        "_head",
        "_head_end",
        "_looping",
        "_lost",
        "_need",
        "_out",
        "_paused",
        "_reader",
        "_reading_paused",
        "_route",
        "close_code",
        "close_sent",
        "front",
        "last_seen",
        "peer",
        "ping_sent",
        "sub",
        "transport",
    )

    def __init__(self, front: FastFront) -> None:
        self.front = front
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.peer: str | None = None
        self._buf: bytearray | None = bytearray()
        self._busy = False
        self._head: Head | None = None
        self._head_end = 0
        self._need = 0
        self._route = 0
        self._eof = False
        self._looping = False
        self._reading_paused = False
        self._paused = False
        self._draining = False
        self._out: list[bytes] | None = None
        self._reader: FrameReader | None = None
        self._frames: collections.deque[str | bytes] | None = None
        self._frames_busy = False
        self._lost: asyncio.Future[None] | None = None
        self._abort_handle: asyncio.TimerHandle | None = None
        self.sub: Subscriber | None = None
        self.close_code: int | None = None
        self.close_sent = False
        self.last_seen = time.monotonic()
        self.ping_sent = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if isinstance(peername, tuple) and peername else None
        self.front.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.front.conns.discard(self)
        if self._abort_handle is not None:
            self._abort_handle.cancel()
            self._abort_handle = None
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if self.sub is not None:
            if self.close_code is None:
                self.close_code = CLOSE_ABNORMAL
            self._end_subscription()

    def eof_received(self) -> bool:
        # An HTTP peer that half-closed still gets the answer being prepared; then the connection closes.
        self._eof = True
        return self._busy and self.sub is None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self.sub is not None:
            if self._reading_paused and self.transport is not None:  # it reads its pongs again
                self._reading_paused = False
                self.transport.resume_reading()
            self._drain()
        elif self.transport is not None:  # HTTP: the peer reads its answers again; take its next requests
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()
            self._next_request()

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        if self._reader is not None:
            self._ws_data(data)
            return
        buf = self._buf
        if buf is None:  # pragma: no cover - handed off; aiohttp's protocol gets the data now
            return
        buf += data
        if not self._busy:
            self._next_request()
        elif len(buf) > _READ_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    # -- HTTP mode ---------------------------------------------------------------------------------

    def _next_request(self) -> None:
        """Start the complete requests in the buffer, one at a time, or hand the connection to aiohttp.

        A loop, not recursion: a request answered during its eager first step (:func:`.eager.start_eagerly`)
        calls :meth:`_respond`, which comes back here; the loop then takes the next pipelined request.
        """
        if self._looping:
            return
        self._looping = True
        try:
            while self._start_one():
                pass
        finally:
            self._looping = False

    def _start_one(self) -> bool:
        """Start the next request if it is complete; True if it was also answered already (go on)."""
        buf = self._buf
        if buf is None or self._busy or self.transport is None:
            return False
        if self._paused:
            # The peer does not read its answers: stop reading its requests until it does (resume_writing),
            # so a pipelining client cannot make the relay queue answers without bound.
            if not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()
            return False
        if self._head is None:
            if buf.startswith(_TLS_HANDSHAKE):  # no HTTP method starts so
                self._tls_on_plain_port()
                return False
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                # A head ended by bare LFs (no CRLF CRLF will come) is not ours: aiohttp (llhttp) refuses it.
                if len(buf) > MAX_HEAD_BYTES or b"\n\n" in buf:
                    self._handoff()
                else:
                    self._want_more()
                return False
            head = parse_head(bytes(buf[:end]))
            route = self._route_of(head) if head is not None else 0
            if not route or head is None:
                self._handoff()
                return False
            self._head, self._route = head, route
            self._head_end = end + 4
            self._need = end + 4 + head.content_length
        if len(buf) < self._need:
            self._want_more()
            return False
        head, route = self._head, self._route
        body = bytes(buf[self._head_end : self._need])
        del buf[: self._need]
        self._head = None
        self._busy = True
        if self.front.eager:
            start_eagerly(self._serve(head, route, body), self.front.track)
        else:
            self.front.track(asyncio.get_running_loop().create_task(self._serve(head, route, body)))
        return not self._busy

    def _want_more(self) -> None:
        """The buffer holds no complete request: read again (unless the peer is not reading our answers)."""
        if self._reading_paused and not self._paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _route_of(self, head: Head) -> int:
        """Which hot route ``head`` is for (0: not ours, hand it to aiohttp)."""
        parts = head.path.split("/")
        if len(parts) != 3 or not parts[1] or not parts[2] or parts[2] in (".", ".."):
            return 0
        if head.content_length > self.front.state.config.max_body_bytes:
            return 0  # aiohttp answers 413 and deals with the unread body
        first = parts[1]
        if head.method == "POST":
            if first == "sub":
                return _REPLY
            if first == HOOK_ORG_ID:
                # A gateway app's webhook goes to the gateway (served by aiohttp; the gateway awaits
                # inside its first step, so it cannot start eagerly).
                return 0 if gateway_for(self.front.state, first, parts[2]) else _WEBHOOK
            return _WEBHOOK if first.startswith("org_") else 0
        if first != "sub" or head.content_length or _query(head.query) is None:
            return 0
        return _SUBSCRIBE if self._upgrade_key(head) else 0

    @staticmethod
    def _upgrade_key(head: Head) -> str | None:
        """The ``Sec-WebSocket-Key`` of a valid RFC 6455 §4.2.1 upgrade, else None (aiohttp answers it)."""
        upgrade = connection = version = key = None
        for name, value in head.headers:
            lname = name.lower()
            if lname == "upgrade":
                upgrade = value.lower()
            elif lname == "connection":
                connection = value.lower()
            elif lname == "sec-websocket-version":
                version = value
            elif lname == "sec-websocket-key":
                if key is not None:
                    return None
                key = value
        if upgrade != "websocket" or connection is None or version != "13" or key is None:
            return None
        if "upgrade" not in (t.strip() for t in connection.split(",")) or not valid_key(key):
            return None
        return key

    def _tls_on_plain_port(self) -> None:
        """A TLS ClientHello on this plain-HTTP port: say so in the log (rate-limited) and close at once, so
        the client fails now with a TLS error instead of waiting for a handshake that never comes."""
        state = self.front.state
        state.stats.rejected += 1
        now = time.monotonic()
        if now - _tls_logged[0] >= 60.0:
            _tls_logged[0] = now
            log.warning(
                "TLS handshake from %s on the relay's plain HTTP port: the client uses https/wss; connect "
                "with http/ws (protocol='http'), or terminate TLS in a proxy in front (README). Logged at "
                "most once a minute",
                self.peer,
            )
        self._respond(error_answer(400, "plain HTTP port: TLS is not spoken here"), close=True)

    def _handoff(self) -> None:
        """Give the connection, and what it sent so far, to aiohttp's request handler."""
        transport, buf = self.transport, self._buf
        self._buf = None
        self.transport = None
        self.front.conns.discard(self)
        handler = self.front.aiohttp_handler()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._reading_paused:
            transport.resume_reading()
        if buf:
            handler.data_received(bytes(buf))
        if self._eof:
            handler.eof_received()

    async def _serve(self, head: Head, route: int, body: bytes) -> None:
        state = self.front.state
        origin = Origin(head.method, head.path, self.peer)
        target = head.path[head.path.index("/", 1) + 1 :]
        try:
            if route == _WEBHOOK:
                org = head.path[1 : len(head.path) - len(target) - 1]
                channel = webhook_channel(state, origin, org, target)
                if isinstance(channel, str):
                    answer = await publish_webhook(state, origin, channel, org, target, head.headers, body)
                else:
                    answer = channel
            elif route == _REPLY:
                refused = check_reply_target(state, origin, target)
                answer = refused or await resolve_reply(state, origin, target, body)
            else:
                refused_sub = await self._subscribe(head, origin, target)
                if refused_sub is None:
                    return
                answer = refused_sub
        except Exception:
            answer = internal_error(head.method, head.path)
            if self.sub is not None:  # already switched to WebSocket: no HTTP answer on that stream
                self._fail(CLOSE_INTERNAL_ERROR, "internal relay error")
                return
        self._respond(answer, close=head.close)

    def _respond(self, answer: Answer, *, close: bool) -> None:
        transport = self.transport
        self._busy = False
        if transport is None:
            return
        close = close or self._eof or self.front.closing
        transport.write(response(answer.status, answer.body, answer.headers, close=close))
        if close:
            self._buf = None
            self.close_transport()
            return
        self._next_request()

    # -- WebSocket mode ----------------------------------------------------------------------------

    async def _subscribe(self, head: Head, origin: Origin, target: str) -> Answer | None:
        """Subscribe and switch to WebSocket mode (None), or the refusal to answer."""
        key = self._upgrade_key(head)
        query = _query(head.query) or {}
        state = self.front.state
        result = await open_subscription(
            state, origin, target, query, CIMultiDict(head.headers), upgrade=key is not None
        )
        if isinstance(result, Answer):
            return result
        sub = result
        transport = self.transport
        if transport is None or transport.is_closing() or key is None:
            sub.close()
            await state.hub.unsubscribe(sub)
            return None
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key).encode("ascii") + b"\r\n\r\n"
        )
        set_nodelay(transport)
        self.sub = sub
        self._reader = FrameReader(state.config.max_ws_message_bytes)
        self._busy = False
        leftover, self._buf = self._buf, None
        sub.on_overload = self._overloaded
        sub.on_ready = self._drain
        sub.write_now = self._write_now
        connected(state, sub, self, query.get("since", ""))
        self._drain()
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        if leftover:
            self._ws_data(bytes(leftover))
        return None

    def _drain(self) -> None:
        """Write queued frames while the transport takes them (called by the subscriber)."""
        sub = self.sub
        if self._draining or self._paused or sub is None or self.close_sent:
            return
        transport = self.transport
        if transport is None:
            return
        self._draining = True
        try:
            while not self._paused:
                frame = sub.pop_frame()
                if frame is None:
                    break
                self._send(_encoded(frame))
        finally:
            self._draining = False

    def _write_now(self, frame: str) -> bool:
        """The subscriber's :attr:`~.Subscriber.write_now`: send ``frame`` unless the transport is not
        taking frames now (then the subscriber queues it and :meth:`_drain` sends it later)."""
        if self._draining or self._paused or self.close_sent or self.transport is None:
            return False
        self._send(_encoded(frame))
        return True

    def _send(self, data: bytes) -> None:
        out = self._out
        if out is None:
            # The first frame of a loop iteration goes out at once (latency); later ones wait for the end of
            # the iteration and go out together: under load, the frames of all the webhooks read in one
            # iteration cost one send() and one wake-up of the peer, which together cost more than the rest
            # of an event.
            self._out = []
            asyncio.get_running_loop().call_soon(self._flush)
            self.transport.write(data)
        else:
            out.append(data)

    def _flush(self) -> None:
        out, self._out = self._out, None
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _ws_data(self, data: bytes) -> None:
        reader = self._reader
        if reader is None or self.transport is None:
            return
        self.ping_sent = 0.0
        try:
            messages = reader.feed(data)
        except WebSocketError as exc:
            self._protocol_error(exc)
            return
        for op, payload in messages:
            if op in (OP_TEXT, OP_BINARY):
                if not self.close_sent:
                    self._client_frame(payload.decode("utf-8") if op == OP_TEXT else payload)
            elif op == OP_PING:
                if not self.close_sent:
                    self.transport.write(encode_frame(payload, OP_PONG))
                    if self._paused and not self._reading_paused:
                        # The peer pings but does not read the pongs: stop reading it until it does
                        # (resume_writing), so its pings cannot grow the relay's memory without bound.
                        self._reading_paused = True
                        self.transport.pause_reading()
            elif op == OP_CLOSE:
                try:
                    code = parse_close(payload)
                except WebSocketError as exc:
                    self._protocol_error(exc)
                    return
                if not self.close_sent:
                    self._send_close(code if code is not None else 1000, "")
                if self.close_code is None:
                    self.close_code = code if code is not None else CLOSE_NO_STATUS
                self._end_subscription()
                if self.transport is not None:
                    self.close_transport()
                return

    def _protocol_error(self, exc: WebSocketError) -> None:
        sub = self.sub
        ws_failed(self.front.state, sub.peer if sub is not None else self.peer, exc.code, exc.reason)
        self._fail(exc.code, exc.reason)

    def _client_frame(self, data: str | bytes) -> None:
        """Queue a client's text/binary message for :func:`~..subscribe.on_client_frame`, in order."""
        frames = self._frames
        if frames is None:
            frames = self._frames = collections.deque()
        frames.append(data)
        if not self._frames_busy:
            self._frames_busy = True
            if self.front.eager:  # acks and replies on an in-memory hub finish without suspending
                start_eagerly(self._handle_frames(), self.front.track)
            else:
                self.front.track(asyncio.get_running_loop().create_task(self._handle_frames()))
        if len(frames) > _FRAMES_HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    async def _handle_frames(self) -> None:
        frames, sub, state = self._frames, self.sub, self.front.state
        try:
            while frames and sub is not None:
                await on_client_frame(state, sub, frames.popleft())
                if self._reading_paused and len(frames) <= _FRAMES_HIGH_WATER // 2 and self.transport:
                    self._reading_paused = False
                    self.transport.resume_reading()
        except Exception:
            log.exception("fast path: frame from %s failed", sub.peer if sub else self.peer)
        finally:
            self._frames_busy = False

    def _overloaded(self, sub: Subscriber) -> None:
        too_slow(self.front.state, sub)
        self._fail(CLOSE_TRY_AGAIN_LATER, "subscriber too slow")

    def _send_close(self, code: int, reason: str) -> None:
        if self.close_sent or self.transport is None:
            return
        self._flush()  # frames already taken from the subscriber go out before the close frame
        self.close_sent = True
        self.transport.write(encode_frame(close_payload(code, reason), OP_CLOSE))

    def _fail(self, code: int, reason: str) -> None:
        """Close with ``code``: stop delivering now, wait briefly for the peer's close frame, then drop."""
        self._send_close(code, reason)
        if self.close_code is None:
            self.close_code = code
        self._end_subscription()
        if self.transport is not None and self._abort_handle is None:
            self._abort_handle = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._abort)

    def close_transport(self) -> None:
        """Close after the queued bytes are sent; drop the connection if the peer does not take them."""
        transport = self.transport
        if transport is None:
            return
        transport.close()
        if self._abort_handle is None:
            self._abort_handle = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._abort)

    def _abort(self) -> None:
        self._abort_handle = None
        if self.transport is not None:
            self.transport.abort()

    def _end_subscription(self) -> None:
        """Stop delivering to this connection and unsubscribe it (once)."""
        sub = self.sub
        if sub is None or sub.closed:
            return
        sub.close()
        sub.on_ready = None
        sub.write_now = None
        task = asyncio.get_running_loop().create_task(self._unsubscribe(sub))
        self.front.track(task)

    async def _unsubscribe(self, sub: Subscriber) -> None:
        state = self.front.state
        try:
            await state.hub.unsubscribe(sub)
        finally:
            disconnected(state, sub, self.close_code)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        """Close the WebSocket with ``code`` (shutdown: 1001) and wait for the peer, at most 1 s."""
        if self.transport is None:
            return False
        self._fail(code, message.decode("utf-8", "replace"))
        if self.transport is None:  # pragma: no cover - closed by the write above
            return True
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
        await self._lost
        return True

    def heartbeat(self, now: float, interval: float, keepalive: float) -> None:
        """Called by the front's sweeper: ping an idle WebSocket, drop one that ignored the last ping,
        close an HTTP connection idle for ``keepalive`` seconds."""
        transport = self.transport
        if transport is None:
            return
        if self.sub is None:
            if not self._busy and now - self.last_seen >= keepalive:
                self.close_transport()
            return
        if self.close_sent:
            return
        beat = heartbeat_step(now, self.last_seen, self.ping_sent, interval)
        if beat is Beat.DROP:
            missed_heartbeat(self.sub.peer)
            self.close_code = CLOSE_ABNORMAL
            self._end_subscription()
            transport.abort()
        elif beat is Beat.PING:
            self.ping_sent = now
            transport.write(encode_frame(b"", OP_PING))

    def is_websocket(self) -> bool:
        return self.sub is not None

    def is_idle(self) -> bool:
        """An HTTP connection between requests (shutdown closes these at once)."""
        return self.sub is None and not self._busy
