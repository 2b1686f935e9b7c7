"""RFC 6455 cases of the Autobahn suite's categories 1-7 and 9 (framing, pings and pongs, reserved bits,
opcodes, fragmentation, UTF-8, close handling, limits) as raw-socket tests against both servers (issue 19).

Each case sends raw frames after a real handshake and reads what comes back until the close frame: the
relay's own ``PING``/``PONG`` text protocol stands in for Autobahn's echo. Expected is what the RFC asks of a
server (and Autobahn checks): protocol errors close 1002, invalid UTF-8 1007, a message over the limit
1009, valid close codes are answered (echoed or 1000). The fast path meets every case; aiohttp alone
(``--no-fast-path``) deviates in the cases of :data:`AIOHTTP_DEVIATES`, marked as expected failures
(strict: a fixed aiohttp makes them fail, and they are then removed).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import AsyncIterator

import pytest

from wslarkbot.relay import run_relay
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import test_config

pytestmark = pytest.mark.timeout(60)

TEXT, BINARY, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0
LIMIT = 4096


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = bytes([first, bit | n])
    elif n < 65536:
        head = bytes([first, bit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close(code: int | None = None, reason: bytes = b"") -> bytes:
    return frame(CLOSE, struct.pack("!H", code) + reason if code is not None else b"")


ANSWERED = ["text PONG"]  # the relay's answer to a PING text message
#: case -> (frames sent, what comes back: messages, then "close <code>" or "no close")
CASES: dict[str, tuple[list[bytes], list[str]]] = {
    # 1: framing
    "1 text message": ([frame(TEXT, b"PING")], ANSWERED),
    "1 binary message": ([frame(BINARY, b"PING")], ANSWERED),
    "1 payload of 126 bytes (16-bit length)": ([frame(TEXT, b" " * 122 + b"PING")], ["close 1002"]),
    # 2: pings and pongs
    "2 ping with a payload is answered by a pong with it": ([frame(PING, b"abc")], ["pong abc"]),
    "2 empty ping": ([frame(PING)], ["pong "]),
    "2 ping of 125 bytes": ([frame(PING, b"x" * 125)], ["pong xxxxxxxxxx"]),
    "2 ping of 126 bytes": ([frame(PING, b"x" * 126)], ["close 1002"]),
    "2 unsolicited pong is ignored": ([frame(PONG, b"x"), frame(TEXT, b"PING")], ANSWERED),
    "2 fragmented ping": ([frame(PING, b"x", fin=False)], ["close 1002"]),
    # 3: reserved bits
    "3 RSV1": ([frame(TEXT, b"PING", rsv=4)], ["close 1002"]),
    "3 RSV2 on a ping": ([frame(PING, b"x", rsv=2)], ["close 1002"]),
    "3 RSV3": ([frame(TEXT, b"PING", rsv=1)], ["close 1002"]),
    # 4: opcodes
    "4 reserved data opcode 3": ([frame(3, b"x")], ["close 1002"]),
    "4 reserved data opcode 7": ([frame(7, b"x")], ["close 1002"]),
    "4 reserved control opcode 11": ([frame(11, b"x")], ["close 1002"]),
    "4 reserved control opcode 15": ([frame(15, b"x")], ["close 1002"]),
    # 5: fragmentation
    "5 a fragmented text message": ([frame(TEXT, b"PI", fin=False), frame(CONT, b"NG")], ANSWERED),
    "5 a ping between fragments": (
        [frame(TEXT, b"PI", fin=False), frame(PING, b"x"), frame(CONT, b"NG")],
        ["pong x", "text PONG"],
    ),
    "5 a continuation without a message": ([frame(CONT, b"x")], ["close 1002"]),
    "5 a new message inside a fragmented one": (
        [frame(TEXT, b"a", fin=False), frame(TEXT, b"b")],
        ["close 1002"],
    ),
    # 6: UTF-8
    "6 invalid UTF-8": ([frame(TEXT, b"\xff\xfe")], ["close 1007"]),
    "6 invalid UTF-8 across fragments": (
        [frame(TEXT, b"\xce", fin=False), frame(CONT, b"\x28")],
        ["close 1007"],
    ),
    "6 valid UTF-8 split inside a character": (
        [frame(TEXT, b"PING\xce", fin=False), frame(CONT, b"\xbc")],
        ["close 1002"],  # valid UTF-8 but not a relay message: an error frame, then... see below
    ),
    # 7: close handling
    "7 close 1000": ([close(1000)], ["close 1000"]),
    "7 close without a body": ([close()], ["close 1000"]),
    "7 close with a one-byte body": ([frame(CLOSE, b"\x03")], ["close 1002"]),
    "7 close 999": ([close(999)], ["close 1002"]),
    "7 close 1004 (reserved)": ([close(1004)], ["close 1002"]),
    "7 close 1005 (never sent)": ([close(1005)], ["close 1002"]),
    "7 close 1006 (never sent)": ([close(1006)], ["close 1002"]),
    "7 close 1015 (never sent)": ([close(1015)], ["close 1002"]),
    "7 close 5000 (out of range)": ([close(5000)], ["close 1002"]),
    "7 close 3000": ([close(3000)], ["close 3000"]),
    "7 close 4999": ([close(4999)], ["close 4999"]),
    "7 close with an invalid UTF-8 reason": ([close(1000, b"\xff")], ["close 1007"]),
    "7 nothing after the close": ([close(1000), frame(TEXT, b"PING")], ["close 1000"]),
    # masking (RFC 6455 5.1: a server closes on an unmasked client frame)
    "5.1 an unmasked client frame": ([frame(TEXT, b"PING", mask=False)], ["close 1002"]),
    # 9: limits (max_ws_message_bytes)
    "9 a message at the limit": ([frame(TEXT, b" " * (LIMIT - 4) + b"PING")], ["close 1002"]),
    "9 a message over the limit": ([frame(TEXT, b"x" * (LIMIT + 1))], ["close 1009"]),
    "9 fragments over the limit": (
        [frame(TEXT, b"x" * LIMIT, fin=False), frame(CONT, b"x")],
        ["close 1009"],
    ),
}
# A relay message is JSON or PING/PONG: padded text is refused with an error frame, not a close. Those
# cases check the frame arrived whole (the error frame is the proof), so their expectation is the error.
for _name in ("1 payload of 126 bytes (16-bit length)", "6 valid UTF-8 split inside a character",
              "9 a message at the limit"):  # fmt: skip
    CASES[_name] = (CASES[_name][0], ['text {"type":"e'])

#: aiohttp's own reader (``--no-fast-path``) answers these otherwise (checked with aiohttp 3.14).
AIOHTTP_DEVIATES = {
    "7 close 1006 (never sent)": "answers 1000 to a close code a peer must not send",
    "7 close 5000 (out of range)": "answers 1000 to a close code outside 1000-4999",
    "7 close 3000": "answers 1000 (allowed) instead of echoing",
    "7 close 4999": "answers 1000 (allowed) instead of echoing",
    "5.1 an unmasked client frame": "accepts unmasked client frames",
}


async def exchange(port: int, frames: list[bytes]) -> list[str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /sub/cli_rfc HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    writer.writelines(frames)
    await writer.drain()
    seen: list[str] = []
    try:
        while True:
            head = await asyncio.wait_for(reader.readexactly(2), 1.0)
            opcode, n = head[0] & 0x0F, head[1] & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await reader.readexactly(8))
            payload = await reader.readexactly(n)
            if opcode == CLOSE:
                seen.append(f"close {struct.unpack('!H', payload[:2])[0]}" if len(payload) >= 2 else "close")
                break
            name = {TEXT: "text", BINARY: "binary", PING: "ping", PONG: "pong"}.get(opcode, str(opcode))
            seen.append(f"{name} {payload[:10].decode('utf-8', 'replace')}")
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        seen.append("no close")
    finally:
        writer.close()
    return seen


@pytest.fixture(params=[True, False], ids=["fast-path", "aiohttp"])
async def relay(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RunningRelay, bool]]:
    async with run_relay(test_config(fast_path=request.param, max_ws_message_bytes=LIMIT)) as running:
        yield running, request.param


@pytest.mark.parametrize("name", list(CASES))
async def test_rfc6455_case(
    name: str, relay: tuple[RunningRelay, bool], request: pytest.FixtureRequest
) -> None:
    running, fast = relay
    if not fast and name in AIOHTTP_DEVIATES:
        request.applymarker(pytest.mark.xfail(reason=f"aiohttp {AIOHTTP_DEVIATES[name]}", strict=True))
    frames, expected = CASES[name]
    seen = await exchange(running.port, frames)
    want = expected if expected[-1].startswith("close") else [*expected, "no close"]
    assert [s[: len(w)] for s, w in zip(seen, want, strict=False)] == want and len(seen) == len(want), seen
