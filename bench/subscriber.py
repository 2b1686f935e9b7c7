"""The receiving side of the benchmark: a separate process holding N WebSocket subscriptions.

A minimal RFC 6455 client on ``asyncio.Protocol``, so the receiver costs little CPU: no JSON decoding of
envelopes, only a byte search for the benchmark marker ``"bench":{"s":<seq>,"t":<ns>}`` the load
generator puts in each body. ``t`` is ``CLOCK_MONOTONIC`` in ns, taken by the sender just before the
request was written; the latency is ``monotonic_ns()`` at receipt minus ``t``.

Run by ``bench/__main__.py`` as ``python -m bench.subscriber --url ws://H:P --path /sub/ch --count N``;
it prints ``READY`` once every connection got its 101, then answers commands on stdin, one JSON line
each: ``stats``, ``latency``, ``reset``, ``quit``.

With ``--reply URL``, it answers challenges (the challenge round-trip scenario): for each url_verification
envelope it POSTs ``{"challenge": <body.challenge>}`` to ``URL/sub/<x-request-id>`` (the original protocol),
over a small pool of keep-alive HTTP/1.1 connections (``Replier``). With ``--reply-ws`` (our relay only) it
subscribes with ``?proto=2`` and answers over the same WebSocket instead:
``{"type":"reply","request_id":<id>,"body":{"challenge":...}}``; other events (the harness's probes) get an
``ack``, so the relay does not hold them for the ack timeout. Both modes are plain ``asyncio.Protocol``
code, so the replier costs little CPU next to the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import struct
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit


def _std_dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


json_dumps: Callable[[Any], bytes] = _std_dumps
json_loads: Callable[[bytes], Any] = json.loads
try:  # the relay extra installs orjson: several times faster on the replier's envelopes
    import orjson

    json_dumps, json_loads = orjson.dumps, orjson.loads
except ImportError:  # pragma: no cover - without the relay extra
    pass


MARKER = b'"bench":{"s":'
PROBE = b'"probe":'

#: Called with (connection, payload, is_probe) for every frame without a bench marker.
OnMessage = Callable[["Subscriber", bytes, bool], None]

# RFC 6455 §5.2 opcodes
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask, RFC 6455 §5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    if not payload:
        return header + mask
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + body


class Stats:
    """What all connections of this process received since the last reset.

    ``since`` is ``monotonic_ns()`` at the last reset: a benchmark message whose send time ``t`` is
    older was sent before the reset, by the previous run (a request still in the server when wrk
    stopped, which wrk does not count and the harness's drain did not wait for). Such messages are
    counted as ``stale`` only: each wrk run numbers its bodies from 1 again, so counting them would
    report the next run's copies of those sequence numbers as duplicates (and could hide a loss)."""

    def __init__(self, connections: int) -> None:
        self.since = time.monotonic_ns()
        self.stale = 0
        self.per_conn = [0] * connections
        self.seqs: set[int] = set()
        self.duplicates = 0
        self.latencies = array("q")
        self.probes = 0
        self.probed: set[int] = set()
        self.other = 0

    def reset(self) -> None:
        self.since = time.monotonic_ns()  # the same clock as wrk's ``t`` (CLOCK_MONOTONIC)
        self.stale = 0
        self.per_conn = [0] * len(self.per_conn)
        self.seqs.clear()
        self.duplicates = 0
        self.latencies = array("q")
        self.probes = 0
        self.probed.clear()
        self.other = 0


class Subscriber(asyncio.Protocol):
    """One WebSocket subscription."""

    def __init__(
        self, index: int, host: str, path: str, stats: Stats, on_message: OnMessage | None = None
    ) -> None:
        self.index = index
        self.host = host
        self.path = path
        self.stats = stats
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status_line = bytes(self.buf[: self.buf.find(b"\r\n")])
            if b" 101 " not in status_line:
                self.opened.set_exception(ConnectionError(status_line.decode(errors="replace")))
                assert self.transport is not None
                self.transport.close()
                return
            del self.buf[: end + 4]
            self.upgraded = True
            self.opened.set_result(None)
        self._frames()

    def _frames(self) -> None:
        buf = self.buf
        pos = 0
        while True:
            if len(buf) - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if len(buf) - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            self._frame(b0 & 0x0F, payload)
        del buf[:pos]

    def _frame(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode in (OP_TEXT, OP_BINARY):  # servers send unfragmented frames here (nchan, aiohttp)
            self._message(payload)
        elif opcode == OP_PING:
            self.transport.write(masked_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.transport.write(masked_frame(OP_CLOSE, payload[:2]))
            self.transport.close()

    def _message(self, payload: bytes) -> None:
        now = time.monotonic_ns()
        stats = self.stats
        i = payload.find(MARKER)
        if i >= 0:
            j = i + len(MARKER)
            k = payload.index(b",", j)
            seq = int(payload[j:k])
            t_end = payload.index(b"}", k)
            sent = int(payload[k + 5 : t_end])  # ,"t":<ns>}
            if sent < stats.since:  # sent before the last reset: a late message of the previous run
                stats.stale += 1
                return
            stats.per_conn[self.index] += 1
            if seq in stats.seqs and len(stats.per_conn) == 1:
                stats.duplicates += 1
            stats.seqs.add(seq)
            stats.latencies.append(now - sent)
        elif payload.find(PROBE) >= 0:
            stats.probes += 1
            stats.probed.add(self.index)
            if self.on_message is not None:
                self.on_message(self, payload, True)
        else:
            stats.other += 1
            if self.on_message is not None:
                self.on_message(self, payload, False)

    def send_text(self, payload: bytes) -> None:
        """One masked text frame to the server (protocol-2 answers)."""
        assert self.transport is not None
        self.transport.write(masked_frame(OP_TEXT, payload))


def percentiles(values: array, points: tuple[float, ...] = (50, 90, 99, 99.9)) -> dict[str, float]:
    """Percentiles in milliseconds (nearest rank)."""
    if not values:
        return {f"p{p:g}": float("nan") for p in points} | {"max": float("nan")}
    ordered = sorted(values)
    out = {f"p{p:g}": ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] / 1e6 for p in points}
    out["max"] = ordered[-1] / 1e6
    return out


class ReplyStats:
    """What the replier did since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.challenges = 0  # url_verification envelopes received
        self.replied = 0  # answers: POST /sub/<id> answered 2xx, or reply frames written (protocol 2)
        self.failed = 0  # POST /sub/<id> answered non-2xx, or lost with its connection
        self.ws_errors = 0  # protocol 2: error frames from the relay
        self.acks = 0  # protocol 2: acks written for other events (the harness's probes)
        self.unparsed = 0  # frames that were not JSON
        self.statuses: dict[int, int] = {}  # status of each POST /sub/<id> answer

    def as_dict(self) -> dict[str, Any]:
        return {
            "challenges": self.challenges,
            "replied": self.replied,
            "reply_failed": self.failed,
            "reply_ws_errors": self.ws_errors,
            "acks": self.acks,
            "unparsed": self.unparsed,
            "reply_statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


def _complain(stats: ReplyStats, text: str) -> None:
    """The first few problems go to stderr (the harness's terminal); the counters keep the rest."""
    if stats.failed + stats.ws_errors + stats.unparsed <= 3:
        print(f"subscriber: {text}", file=sys.stderr, flush=True)


class _HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the pool: one request in flight at a time, and a minimal
    response parser (status line, Content-Length or chunked body, ``Connection: close``)."""

    def __init__(self, pool: HttpPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # asyncio and uvloop set TCP_NODELAY

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.busy = True
        self.transport.write(request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self, exc)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while buf:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            try:
                status = int(head[9:12])
            except ValueError:
                status = 0
            total = self._body_end(head, end + 4)
            if total < 0:
                return  # body incomplete
            if total == 0:  # neither Content-Length nor chunked: cannot tell where it ends
                status, self.closing = 0, True
                total = len(buf)
            del buf[:total]
            if b"\r\nconnection: close" in head:
                self.closing = True
            self.busy = False
            self.pool.answered(self, status)
            if self.closing:
                assert self.transport is not None
                self.transport.close()
                return

    def _body_end(self, head: bytes, start: int) -> int:
        """Offset just after the response's body in ``self.buf``; -1: not all here yet; 0: unknown."""
        buf = self.buf
        i = head.find(b"\r\ncontent-length:")
        if i >= 0:
            eol = head.find(b"\r\n", i + 2)
            total = start + int(head[i + 17 : eol if eol >= 0 else len(head)])
            return total if len(buf) >= total else -1
        if b"\r\ntransfer-encoding: chunked" not in head:
            return 0
        pos = start
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return -1
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            if size == 0:  # last chunk, then optional trailers, then an empty line
                if buf[eol + 2 : eol + 4] == b"\r\n":
                    return eol + 4
                fin = buf.find(b"\r\n\r\n", eol + 2)
                return fin + 4 if fin >= 0 else -1
            pos = eol + 2 + size + 2
            if len(buf) < pos:
                return -1


class HttpPool:
    """Up to ``limit`` keep-alive connections to one server, opened on demand and reused; requests that
    find every connection busy wait in a queue for the next free one."""

    def __init__(self, base_url: str, stats: ReplyStats, limit: int = 32) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = f"Host: {self.host}:{self.port}\r\nContent-Type: application/json\r\n".encode()
        self.stats = stats
        self.limit = limit
        self.idle: list[_HttpConn] = []
        self.conns: set[_HttpConn] = set()
        self.opening = 0
        self.queue: deque[bytes] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.opened = 0  # connections opened over the process's life

    def post(self, path: bytes, body: bytes) -> None:
        request = b"".join(
            (
                b"POST ",
                path,
                b" HTTP/1.1\r\n",
                self.head,
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        if self.idle:
            self.idle.pop().send(request)
        elif len(self.conns) + self.opening < self.limit:
            self._open(request)
        else:
            self.queue.append(request)

    def _open(self, request: bytes) -> None:
        self.opening += 1
        task = asyncio.get_running_loop().create_task(self._connect(request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _HttpConn(self), self.host, self.port)
        except OSError as exc:
            self.stats.failed += 1
            _complain(self.stats, f"reply connection failed: {exc}")
            return
        finally:
            self.opening -= 1
        self.opened += 1
        self.conns.add(conn)
        conn.send(request)

    def answered(self, conn: _HttpConn, status: int) -> None:
        stats = self.stats
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            stats.replied += 1
        else:
            stats.failed += 1
            _complain(stats, f"reply answered {status or 'unparsable'}")
        if conn.closing:
            return
        if self.queue:
            conn.send(self.queue.popleft())
        else:
            self.idle.append(conn)

    def lost(self, conn: _HttpConn, exc: Exception | None) -> None:
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.busy:
            self.stats.failed += 1
            _complain(self.stats, f"reply connection lost with a request in flight: {exc}")
        if self.queue and len(self.conns) + self.opening < self.limit:
            self._open(self.queue.popleft())

    def close(self) -> None:
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()


class Replier:
    """Answers each url_verification envelope: ``POST /sub/<request_id>`` with ``{"challenge": ...}``
    over an ``HttpPool`` (the original protocol), or with ``ws=True`` a protocol-2 ``reply`` frame on
    the WebSocket that brought the envelope (other events get an ``ack`` there)."""

    def __init__(self, base_url: str | None, *, ws: bool = False, limit: int = 32) -> None:
        self.ws = ws
        self.stats = ReplyStats()
        self.pool = None if ws else HttpPool(base_url or "", self.stats, limit)

    def __call__(self, sub: Subscriber, payload: bytes, probe: bool) -> None:
        if probe and not self.ws:
            return  # a signed probe event: answered at once by the server, nothing to send
        stats = self.stats
        try:
            msg = json_loads(payload)
            headers = msg.get("headers") or {}
            body = msg.get("body")
        except (ValueError, AttributeError):
            stats.unparsed += 1
            _complain(stats, f"frame is not a JSON object: {payload[:200]!r}")
            return
        kind = msg.get("type")
        if kind is not None:  # protocol 2: hello (ignored) or error
            if kind == "error":
                stats.ws_errors += 1
                _complain(stats, f"relay refused an answer: {payload[:300]!r}")
            return
        rid = headers.get("x-request-id")
        if not isinstance(rid, str):
            return
        if isinstance(body, dict) and body.get("type") == "url_verification":
            stats.challenges += 1
            answer = json_dumps({"challenge": body.get("challenge")})
            if self.pool is not None:
                self.pool.post(b"/sub/" + rid.encode(), answer)
            else:
                rid_json = json_dumps(rid)
                sub.send_text(b'{"type":"reply","request_id":' + rid_json + b',"body":' + answer + b"}")
                stats.replied += 1
        elif self.ws:
            sub.send_text(b'{"type":"ack","request_id":' + json_dumps(rid) + b"}")
            stats.acks += 1

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


async def connect_all(
    url: str, paths: list[str], stats: Stats, on_message: OnMessage | None, parallel: int = 256
) -> list:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(parallel)
    subs: list[Subscriber] = []

    async def one(i: int, path: str) -> None:
        async with gate:
            _, proto = await loop.create_connection(
                lambda: Subscriber(i, f"{host}:{port}", path, stats, on_message), host, port
            )
            subs.append(proto)
            await asyncio.wait_for(proto.opened, 30)

    await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))
    return subs


def raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(wanted, hard), max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def amain(args: argparse.Namespace) -> None:
    raise_nofile(args.count + 1024)
    query = "?proto=2" if args.reply_ws else ""
    paths = [f"{args.path}{i if args.distinct else ''}{query}" for i in range(args.count)]
    stats = Stats(args.count)
    replier = Replier(args.reply, ws=True) if args.reply_ws else Replier(args.reply) if args.reply else None
    subs = await connect_all(args.url, paths, stats, replier)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line in ("", "quit"):
            break
        if line == "stats":
            closed = sum(1 for s in subs if s.closed.done())
            out: dict[str, Any] = {
                "received": sum(stats.per_conn),
                "per_conn": stats.per_conn if len(stats.per_conn) <= 100 else [],
                "unique": len(stats.seqs),
                "duplicates": stats.duplicates,
                "stale": stats.stale,
                "probes": stats.probes,
                "probed_connections": len(stats.probed),
                "other": stats.other,
                "closed": closed,
            }
            if replier is not None:
                out |= replier.stats.as_dict()
        elif line == "latency":
            out = percentiles(stats.latencies)
        elif line == "reset":
            stats.reset()
            if replier is not None:
                replier.stats.reset()
            out = {"ok": True}
        else:
            out = {"error": f"unknown command {line!r}"}
        print(json.dumps(out), flush=True)
    for s in subs:
        if s.transport is not None:
            s.transport.close()
    if replier is not None:
        replier.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="ws://host:port")
    parser.add_argument("--path", required=True, help="/sub/<channel> (a prefix with --distinct)")
    parser.add_argument("--count", type=int, default=1, help="number of WebSocket connections")
    parser.add_argument("--distinct", action="store_true", help="connection i subscribes to <path><i>")
    parser.add_argument("--reply", metavar="HTTP_URL", help="answer challenges via POST <url>/sub/<id>")
    parser.add_argument(
        "--reply-ws",
        action="store_true",
        help="subscribe with ?proto=2 and answer challenges over the WebSocket (our relay only)",
    )
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="run on uvloop when it is installed (cheaper per message; the challenge scenario uses it)",
    )
    args = parser.parse_args()
    if args.uvloop:
        try:
            import uvloop

            uvloop.run(amain(args))
            return
        except ImportError:
            pass
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
