"""PROTOTYPE, for measurement only (docs/performance.md, "What would meet the rest"): the relay's two hot
routes without aiohttp, on ``asyncio.Protocol`` + uvloop + orjson. Not the relay; nothing imports it.

Serves ``POST /hook/<app_id>`` (signed bodies answered at once, unsigned ones wait for a reply, like
challenges), ``GET /sub/<channel>`` WebSockets (original protocol, same envelope fields) and
``POST /sub/<request_id>`` replies: enough for the harness's sustained, latency, challenge, RSS and fan-out
scenarios. No auth, limits, timeouts, metrics or logging.

    python -m bench.fastpath_prototype PORT      # needs uvloop and orjson
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys
import uuid
from typing import cast

import orjson

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DROP = {
    b"authorization",
    b"proxy-authorization",
    b"cookie",
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"upgrade",
    b"te",
    b"trailer",
}
channels: dict[str, dict[int, Conn]] = {}
pending: dict[str, Conn] = {}


def http(status: bytes, body: bytes, keep: bool = True) -> bytes:
    end = b"\r\n\r\n" if keep else b"\r\nConnection: close\r\n\r\n"
    head = b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
    return head + str(len(body)).encode() + end + body


OK = http(b"200 OK", b'{"msg":"success"}')


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


class Conn(asyncio.Protocol):
    __slots__ = ("buf", "channel", "t", "ws")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = cast(asyncio.Transport, transport)  # uvloop: not an asyncio.Transport subclass
        self.buf = b""
        self.ws = False
        self.channel: str | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.channel is not None:
            subs = channels.get(self.channel)
            if subs is not None:
                subs.pop(id(self), None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.ws:
            self.buf = self.ws_frames(buf)
            return
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].split(b"\r\n")
            hdrs: dict[bytes, bytes] = {}
            for line in head[1:]:
                k, _, v = line.partition(b":")
                hdrs[k.strip().lower()] = v.strip()
            n = int(hdrs.get(b"content-length", b"0"))
            if len(buf) < end + 4 + n:
                break
            body = buf[end + 4 : end + 4 + n]
            buf = buf[end + 4 + n :]
            method, path, _ = head[0].split(b" ", 2)
            self.request(method, path.decode(), hdrs, body)
            if self.ws:
                buf = self.ws_frames(buf)
                break
        self.buf = buf

    def request(self, method: bytes, path: str, hdrs: dict[bytes, bytes], body: bytes) -> None:
        parts = path.split("/")
        if method == b"POST" and len(parts) == 3 and parts[1] == "hook":
            self.hook(parts[2], hdrs, body)
        elif method == b"GET" and len(parts) == 3 and parts[1] == "sub" and b"sec-websocket-key" in hdrs:
            key = base64.b64encode(hashlib.sha1(hdrs[b"sec-websocket-key"] + GUID).digest())
            self.t.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + key + b"\r\n\r\n"
            )
            self.ws = True
            self.channel = parts[2].split("?")[0]
            channels.setdefault(self.channel, {})[id(self)] = self
        elif method == b"POST" and len(parts) == 3 and parts[1] == "sub":
            waiter = pending.pop(parts[2], None)
            if waiter is None:
                self.t.write(http(b"404 Not Found", b'{"msg":"unknown request id"}'))
            else:
                waiter.t.write(http(b"200 OK", body))
                self.t.write(http(b"200 OK", b'{"ok":true}'))
        elif path == "/healthz":
            self.t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        else:
            self.t.write(http(b"404 Not Found", b'{"msg":"not found"}'))

    def hook(self, channel: str, hdrs: dict[bytes, bytes], body: bytes) -> None:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.t.write(http(b"400 Bad Request", b'{"msg":"not JSON"}'))
            return
        out = {k.decode("latin-1"): v.decode("latin-1") for k, v in hdrs.items() if k not in DROP}
        rid = out.get("x-request-id") or uuid.uuid4().hex
        out["x-app-id"] = channel
        out["x-org-id"] = "hook"
        out["x-request-id"] = rid
        frame = ws_frame(orjson.dumps({"headers": out, "body": parsed, "raw_body": body.decode()}))
        subs = channels.get(channel)
        if not subs:
            self.t.write(http(b"503 Service Unavailable", b'{"msg":"no subscriber"}'))
            return
        for sub in subs.values():
            sub.t.write(frame)
        if b"x-lark-signature" in hdrs:
            self.t.write(OK)
        else:
            pending[rid] = self  # challenge: the reply POST answers it (no timeout in the prototype)

    def ws_frames(self, buf: bytes) -> bytes:
        while len(buf) >= 2:
            op = buf[0] & 0x0F
            n = buf[1] & 0x7F
            i = 2
            if n == 126:
                n, i = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                n, i = int.from_bytes(buf[2:10], "big"), 10
            masked = buf[1] & 0x80
            if len(buf) < i + (4 if masked else 0) + n:
                break
            if masked:
                mask, i = buf[i : i + 4], i + 4
                payload = bytes(b ^ mask[j % 4] for j, b in enumerate(buf[i : i + n]))
            else:
                payload = buf[i : i + n]
            buf = buf[i + n :]
            if op == 9:
                self.t.write(ws_frame(payload, 10))
            elif op == 8:
                self.t.write(ws_frame(payload[:2], 8))
                self.t.close()
        return buf


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1])))
