"""A differential test of the HTTP edge (issue 19): raw requests, valid, malformed and smuggling-shaped, sent
to both servers (the fast path and aiohttp alone), each answer compared with what llhttp decides for the
same bytes (through ``httptools``: llhttp is the parser of Node.js, uvicorn and aiohttp's C parser).

Whatever llhttp refuses, both servers answer 400 (never 2xx, 5xx or a hang); whatever it accepts, neither
answers 400; and the two servers answer every request alike. So a disagreement between our fast path's
head parser and llhttp fails here.
"""

from __future__ import annotations

import asyncio

import httptools
import pytest

from wslarkbot.relay import run_relay
from wslarkbot.relay.testing import test_config

pytestmark = pytest.mark.timeout(120)

HOST = b"Host: relay\r\n"
SIGNED = b"X-Lark-Signature: s\r\nX-Lark-Request-Timestamp: 1\r\nX-Lark-Request-Nonce: n\r\n"
HOOK = b"POST /hook/cli_diff HTTP/1.1\r\n"


def post(*headers: bytes, body: bytes = b"{}", line: bytes = HOOK) -> bytes:
    return line + b"".join(headers) + b"\r\n" + body


CORPUS: dict[str, bytes] = {
    # valid
    "a signed webhook": post(HOST, SIGNED, b"Content-Length: 2\r\n"),
    "a chunked webhook": post(HOST, b"Transfer-Encoding: chunked\r\n", body=b"2\r\n{}\r\n0\r\n\r\n"),
    "a chunk extension": post(HOST, b"Transfer-Encoding: chunked\r\n", body=b"2;ext=1\r\n{}\r\n0\r\n\r\n"),
    "a GET with a body": b"GET /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: 2\r\n\r\n{}",
    "absolute-form target": post(
        HOST, b"Content-Length: 2\r\n", line=b"POST http://relay/hook/cli_diff HTTP/1.1\r\n"
    ),
    "HTTP/1.0": post(HOST, b"Content-Length: 2\r\n", line=b"POST /hook/cli_diff HTTP/1.0\r\n"),
    "two spaces after the method": post(
        HOST, b"Content-Length: 2\r\n", line=b"POST  /hook/cli_diff HTTP/1.1\r\n"
    ),
    "header name in odd case": post(HOST, b"cOnTeNt-LeNgTh: 2\r\n"),
    "a tab in a header value": post(HOST, b"X-A: a\tb\r\n", b"Content-Length: 2\r\n"),
    "no space after the colon": post(HOST, b"Content-Length:2\r\n"),
    # smuggling shapes
    "Content-Length and Transfer-Encoding": post(
        HOST, b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"
    ),
    "two different Content-Lengths": post(HOST, b"Content-Length: 2\r\n", b"Content-Length: 3\r\n"),
    "two equal Content-Lengths": post(HOST, b"Content-Length: 2\r\n", b"Content-Length: 2\r\n"),
    "obs-fold": post(HOST, b"X-A: a\r\n", b" b\r\n", b"Content-Length: 2\r\n"),
    "bare LF line ends": b"POST /hook/cli_diff HTTP/1.1\nHost: relay\nContent-Length: 2\n\n{}",
    "a bare CR in a value": post(HOST, b"X-A: a\rb\r\n", b"Content-Length: 2\r\n"),
    "chunked, identity": post(HOST, b"Transfer-Encoding: chunked, identity\r\n", body=b"0\r\n\r\n"),
    "a Transfer-Encoding that is not chunked": post(HOST, b"Transfer-Encoding: gzip\r\n"),
    "a bad chunk size": post(HOST, b"Transfer-Encoding: chunked\r\n", body=b"zz\r\n{}\r\n0\r\n\r\n"),
    "a space before the colon": post(HOST, b"Content-Length : 2\r\n"),
    # malformed
    "a NUL in a header": post(HOST, b"X-A: a\x00b\r\n", b"Content-Length: 2\r\n"),
    "a header without a colon": post(HOST, b"X-A\r\n", b"Content-Length: 2\r\n"),
    "a tab in a header name": post(HOST, b"X\tA: a\r\n", b"Content-Length: 2\r\n"),
    "a negative Content-Length": post(HOST, b"Content-Length: -2\r\n"),
    "Content-Length with a plus": post(HOST, b"Content-Length: +2\r\n"),
    "Content-Length in hex": post(HOST, b"Content-Length: 0x2\r\n"),
    "a method with a bad character": post(
        HOST, b"Content-Length: 2\r\n", line=b"P@ST /hook/cli_diff HTTP/1.1\r\n"
    ),
    "a lower-case protocol name": post(
        HOST, b"Content-Length: 2\r\n", line=b"POST /hook/cli_diff http/1.1\r\n"
    ),
    "no version": post(HOST, b"Content-Length: 2\r\n", line=b"POST /hook/cli_diff\r\n"),
}


#: Requests llhttp takes that the relay refuses on purpose, and why (both servers alike).
STRICTER_THAN_LLHTTP = {
    "no version": "an HTTP/0.9 request line: HTTP/1.0 and 1.1 only, as nginx (relay/routes.py)",
}


def llhttp_accepts(data: bytes) -> bool:
    """Whether llhttp parses ``data`` as one complete request."""

    class Done:
        complete = False

        def on_message_complete(self) -> None:
            self.complete = True

    done = Done()
    try:
        httptools.HttpRequestParser(done).feed_data(data)
    except httptools.HttpParserError:
        return False
    assert done.complete, "the corpus holds whole requests only"
    return True


async def status_of(port: int, data: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    assert line.startswith(b"HTTP/"), f"no HTTP answer: {line!r}"
    return int(line.split()[1])


@pytest.fixture(scope="module")
def answers() -> dict[str, tuple[int, int]]:
    async def run() -> dict[str, tuple[int, int]]:
        found: dict[str, list[int]] = {name: [] for name in CORPUS}
        for fast in (True, False):
            async with run_relay(test_config(fast_path=fast)) as relay:
                for name, data in CORPUS.items():
                    found[name].append(await status_of(relay.port, data))
        return {name: (statuses[0], statuses[1]) for name, statuses in found.items()}

    return asyncio.run(run())


@pytest.mark.parametrize("name", list(CORPUS))
def test_both_servers_agree_with_llhttp(name: str, answers: dict[str, tuple[int, int]]) -> None:
    fast, aiohttp = answers[name]
    assert fast == aiohttp, f"fast path {fast}, aiohttp {aiohttp}"
    if name in STRICTER_THAN_LLHTTP:
        assert llhttp_accepts(CORPUS[name]) and fast == 400, STRICTER_THAN_LLHTTP[name]
    elif llhttp_accepts(CORPUS[name]):
        assert fast != 400, "llhttp accepts it"
    else:
        assert fast == 400, "llhttp refuses it"


def test_the_corpus_holds_requests_llhttp_refuses_and_ones_it_accepts() -> None:
    verdicts = {llhttp_accepts(data) for data in CORPUS.values()}
    assert verdicts == {True, False}
