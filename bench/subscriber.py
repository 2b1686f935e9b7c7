"""The receiving side of the benchmark: a separate process holding N WebSocket subscriptions.

A minimal RFC 6455 client on ``asyncio.Protocol``, so the receiver costs little CPU: no JSON decoding of
envelopes, only a byte search for the benchmark marker ``"bench":{"s":<seq>,"t":<ns>}`` the load
generator puts in each body. ``t`` is ``CLOCK_MONOTONIC`` in ns, taken by the sender just before the
request was written; the latency is ``monotonic_ns()`` at receipt minus ``t``.

Run by ``bench/__main__.py`` as ``python -m bench.subscriber --url ws://H:P --path /sub/ch --count N``;
it prints ``READY`` once every connection got its 101, then answers commands on stdin, one JSON line
each: ``stats``, ``latency``, ``reset``, ``quit``.

With ``--reply``, it answers challenges the original way: for each envelope without a bench marker it
POSTs ``{"challenge": body.challenge}`` to ``/sub/<x-request-id>`` (the challenge round-trip scenario).
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
from typing import Any
from urllib.parse import urlsplit

MARKER = b'"bench":{"s":'
PROBE = b'"probe":'

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
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if payload else b""
    return header + mask + body


class Stats:
    """What all connections of this process received since the last reset."""

    def __init__(self, connections: int) -> None:
        self.per_conn = [0] * connections
        self.seqs: set[int] = set()
        self.duplicates = 0
        self.latencies = array("q")
        self.probes = 0
        self.probed: set[int] = set()
        self.other = 0

    def reset(self) -> None:
        self.per_conn = [0] * len(self.per_conn)
        self.seqs.clear()
        self.duplicates = 0
        self.latencies = array("q")
        self.probes = 0
        self.probed.clear()
        self.other = 0


class Subscriber(asyncio.Protocol):
    """One WebSocket subscription."""

    def __init__(self, index: int, host: str, path: str, stats: Stats, on_message: object = None) -> None:
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
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
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
            stats.per_conn[self.index] += 1
            if seq in stats.seqs and len(stats.per_conn) == 1:
                stats.duplicates += 1
            stats.seqs.add(seq)
            stats.latencies.append(now - sent)
        elif payload.find(PROBE) >= 0:
            stats.probes += 1
            stats.probed.add(self.index)
        else:
            stats.other += 1
            if self.on_message is not None:
                self.on_message(payload)  # type: ignore[operator]


def percentiles(values: array, points: tuple[float, ...] = (50, 90, 99, 99.9)) -> dict[str, float]:
    """Percentiles in milliseconds (nearest rank)."""
    if not values:
        return {f"p{p:g}": float("nan") for p in points} | {"max": float("nan")}
    ordered = sorted(values)
    out = {f"p{p:g}": ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] / 1e6 for p in points}
    out["max"] = ordered[-1] / 1e6
    return out


class Replier:
    """Answers challenges the original way: ``POST /sub/<request_id>`` with the challenge."""

    def __init__(self, base_url: str) -> None:
        import aiohttp  # only the --reply mode needs it

        self.base_url = base_url
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        self.tasks: set[asyncio.Task[None]] = set()

    def __call__(self, payload: bytes) -> None:
        envelope = json.loads(payload)
        rid = envelope["headers"]["x-request-id"]
        challenge = envelope["body"].get("challenge")
        task = asyncio.ensure_future(self._post(rid, {"challenge": challenge}))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _post(self, rid: str, body: dict[str, object]) -> None:
        async with self.session.post(f"{self.base_url}/sub/{rid}", json=body) as resp:
            await resp.read()


async def connect_all(
    url: str, paths: list[str], stats: Stats, on_message: object, parallel: int = 256
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
    paths = [f"{args.path}{i}" for i in range(args.count)] if args.distinct else [args.path] * args.count
    stats = Stats(args.count)
    replier = Replier(args.reply) if args.reply else None
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
                "probes": stats.probes,
                "probed_connections": len(stats.probed),
                "other": stats.other,
                "closed": closed,
            }
        elif line == "latency":
            out = percentiles(stats.latencies)
        elif line == "reset":
            stats.reset()
            out = {"ok": True}
        else:
            out = {"error": f"unknown command {line!r}"}
        print(json.dumps(out), flush=True)
    for s in subs:
        if s.transport is not None:
            s.transport.close()
    if replier is not None:
        await replier.session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="ws://host:port")
    parser.add_argument("--path", required=True, help="/sub/<channel> (a prefix with --distinct)")
    parser.add_argument("--count", type=int, default=1, help="number of WebSocket connections")
    parser.add_argument("--distinct", action="store_true", help="connection i subscribes to <path><i>")
    parser.add_argument("--reply", metavar="HTTP_URL", help="answer challenges via POST <url>/sub/<id>")
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
