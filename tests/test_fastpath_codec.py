"""The fast path's sans-I/O codecs: RFC 6455 framing (``wsframe``) and the strict HTTP/1.1 head (``http1``).

Client frames are built, and our server frames parsed, by the ``websockets`` library; responses are parsed
by ``h11``, so the checks do not lean on our own code.
"""

from __future__ import annotations

import email.utils
import json
import types

import h11
import pytest
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader

from wslarkbot.relay.fastpath import http1
from wslarkbot.relay.fastpath.http1 import Head, parse_head, response
from wslarkbot.relay.fastpath.wsframe import (
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

# --- helpers ------------------------------------------------------------------------------------------


def client(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
    """A masked client frame, serialized by websockets."""
    return Frame(opcode, data, fin=fin).serialize(mask=True, extensions=[])


def with_b0(frame: bytes, b0: int) -> bytes:
    """``frame`` with its first byte (FIN, RSV1-3, opcode) replaced."""
    return bytes((b0,)) + frame[1:]


def server_frame(data: bytes) -> Frame:
    """Parse exactly one unmasked server frame with websockets' parser."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    gen = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert not reader.buffer, "bytes left after the frame"
    return stop.value.value


def fails_with(code: int, *chunks: bytes, max_message: int = 1 << 20) -> None:
    reader = FrameReader(max_message)
    with pytest.raises(WebSocketError) as err:
        for chunk in chunks:
            reader.feed(chunk)
    assert err.value.code == code, err.value.reason


# --- wsframe: server frames, handshake keys, close frames -------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_encode_frame_is_one_final_unmasked_frame_websockets_can_parse(n: int, opcode: int) -> None:
    payload = bytes(i % 251 for i in range(n)) if opcode == OP_BINARY else b"x" * n
    frame = server_frame(encode_frame(payload, opcode))
    assert (frame.opcode, frame.fin, bytes(frame.data)) == (opcode, True, payload)
    assert not (frame.rsv1 or frame.rsv2 or frame.rsv3)


@pytest.mark.parametrize(("n", "header"), [(125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_encode_frame_uses_the_shortest_length_encoding(n: int, header: int) -> None:
    assert len(encode_frame(b"a" * n)) == header + n


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_encode_frame_builds_control_frames(opcode: int) -> None:
    frame = server_frame(encode_frame(b"hi", opcode))
    assert (frame.opcode, bytes(frame.data)) == (opcode, b"hi")


def test_accept_key_matches_rfc6455_section_1_3_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("dGhlIHNhbXBsZSBub25jZQ==", True),
        ("AAAAAAAAAAAAAAAAAAAAAA==", True),
        ("dGhlIHNhbXBsZSBub25j", False),  # 15 bytes
        ("dGhlIHNhbXBsZSBub25jZQ1=", False),  # 17 bytes
        ("", False),
        ("not base64 at all!!!!!==", False),
        ("dGhlIHNhbXBsZSBub25jZQ", False),  # missing padding
        ("dGhlIHNhbXBsZSBub25jZQ==\n", False),
        ("dGhlIHNhbXBsZSBub25jZé==", False),
    ],
)
def test_valid_key_accepts_only_base64_of_16_bytes(key: str, ok: bool) -> None:
    assert valid_key(key) is ok


def test_parse_close_without_body_means_no_code() -> None:
    assert parse_close(b"") is None


@pytest.mark.parametrize("code", [1000, 1001, 1011, 3000, 4000, 4999])
def test_parse_close_returns_codes_a_peer_may_send(code: int) -> None:
    assert parse_close(code.to_bytes(2, "big") + "bye ✓".encode()) == code


BAD_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize(
    ("payload", "code"),
    [(c.to_bytes(2, "big"), 1002) for c in BAD_CLOSE_CODES]
    + [(b"\x03", 1002), (b"\x03\xe8\xc3", 1007)],  # one-byte body; reason not UTF-8
)
def test_parse_close_rejects_bad_code_or_one_byte_body_with_1002_and_bad_reason_with_1007(
    payload: bytes, code: int
) -> None:
    with pytest.raises(WebSocketError) as err:
        parse_close(payload)
    assert err.value.code == code


def test_close_payload_round_trips_code_and_reason() -> None:
    assert close_payload(1000, "bye") == b"\x03\xe8bye"
    assert parse_close(close_payload(4001, "ünïcode")) == 4001
    assert Close.parse(close_payload(4001, "ünïcode")) == Close(4001, "ünïcode")  # websockets agrees


def test_close_payload_truncation_keeps_the_reason_valid_utf8() -> None:
    payload = close_payload(1000, "é" * 62)  # 124 bytes of UTF-8
    assert len(payload) <= 125
    assert parse_close(payload) == 1000


# --- wsframe: FrameReader -----------------------------------------------------------------------------

STREAM = (
    client(Opcode.TEXT, "héllo".encode())
    + client(Opcode.PING, b"p1")
    + client(Opcode.BINARY, bytes(range(256)) * 300)  # 76800 bytes: 64-bit length
    + client(Opcode.TEXT, b"a" * 200)  # 16-bit length
    + client(Opcode.CLOSE, close_payload(1000, "done"))
)
STREAM_EVENTS = [
    (OP_TEXT, "héllo".encode()),
    (OP_PING, b"p1"),
    (OP_BINARY, bytes(range(256)) * 300),
    (OP_TEXT, b"a" * 200),
    (OP_CLOSE, b"\x03\xe8done"),
]


def test_reader_unmasks_a_text_message() -> None:
    assert FrameReader(1024).feed(client(Opcode.TEXT, b"hello")) == [(OP_TEXT, b"hello")]


def test_reader_returns_binary_payload_with_arbitrary_bytes() -> None:
    data = bytes(range(256)) * 3
    assert FrameReader(1024).feed(client(Opcode.BINARY, data)) == [(OP_BINARY, data)]


def test_reader_returns_empty_messages() -> None:
    assert FrameReader(10).feed(client(Opcode.TEXT, b"") + client(Opcode.PING, b"")) == [
        (OP_TEXT, b""),
        (OP_PING, b""),
    ]


def test_reader_returns_several_frames_from_one_chunk_in_order() -> None:
    assert FrameReader(1 << 20).feed(STREAM) == STREAM_EVENTS


def test_reader_gives_the_same_result_fed_one_byte_at_a_time() -> None:
    reader = FrameReader(1 << 20)
    events = [event for i in range(len(STREAM)) for event in reader.feed(STREAM[i : i + 1])]
    assert events == STREAM_EVENTS


def test_reader_gives_the_same_result_split_at_every_offset() -> None:
    data = client(Opcode.TEXT, b"a" * 130) + client(Opcode.PING, b"x") + client(Opcode.BINARY, b"\0\xff")
    expected = [(OP_TEXT, b"a" * 130), (OP_PING, b"x"), (OP_BINARY, b"\0\xff")]
    for cut in range(len(data) + 1):
        reader = FrameReader(1024)
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == expected, cut


def test_reader_reassembles_fragments_and_returns_interleaved_ping_first() -> None:
    data = (
        client(Opcode.TEXT, b"he", fin=False)
        + client(Opcode.CONT, b"ll", fin=False)
        + client(Opcode.PING, b"ping")
        + client(Opcode.CONT, b"o")
    )
    assert FrameReader(1024).feed(data) == [(OP_PING, b"ping"), (OP_TEXT, b"hello")]


def test_reader_accepts_utf8_split_across_fragments() -> None:
    data = client(Opcode.TEXT, b"\xc3", fin=False) + client(Opcode.CONT, b"\xa9")
    assert FrameReader(1024).feed(data) == [(OP_TEXT, "é".encode())]


def test_reader_rejects_unmasked_client_frame_with_1002() -> None:
    fails_with(1002, Frame(Opcode.TEXT, b"hi").serialize(mask=False))


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10])
def test_reader_rejects_reserved_bits_with_1002(rsv: int) -> None:
    fails_with(1002, with_b0(client(Opcode.TEXT, b"hi"), 0x80 | rsv | OP_TEXT))


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_reader_rejects_unknown_opcode_with_1002(opcode: int) -> None:
    fails_with(1002, with_b0(client(Opcode.BINARY, b"hi"), 0x80 | opcode))


def test_reader_rejects_control_frame_over_125_bytes_with_1002() -> None:
    fails_with(1002, with_b0(client(Opcode.BINARY, b"p" * 126), 0x80 | OP_PING))


def test_reader_rejects_fragmented_control_frame_with_1002() -> None:
    fails_with(1002, with_b0(client(Opcode.BINARY, b"p"), OP_PING))  # FIN clear


def test_reader_rejects_continuation_without_a_started_message_with_1002() -> None:
    fails_with(1002, client(Opcode.CONT, b"orphan"))


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_reader_rejects_new_data_frame_while_fragmented_message_is_open_with_1002(opcode: Opcode) -> None:
    fails_with(1002, client(Opcode.TEXT, b"a", fin=False) + client(opcode, b"b"))


@pytest.mark.parametrize(("n", "header_len"), [(11, 2), (1000, 4), (70000, 10)])
def test_reader_rejects_oversized_message_with_1009_from_the_header_alone(n: int, header_len: int) -> None:
    header = client(Opcode.BINARY, b"x" * n)[:header_len]  # no mask key, no payload yet
    fails_with(1009, header, max_message=10)


def test_reader_accepts_message_of_exactly_max_message() -> None:
    assert FrameReader(10).feed(client(Opcode.BINARY, b"x" * 10)) == [(OP_BINARY, b"x" * 10)]


def test_reader_rejects_fragments_adding_up_over_max_message_with_1009() -> None:
    first = client(Opcode.TEXT, b"a" * 6, fin=False)
    fails_with(1009, first, client(Opcode.CONT, b"b" * 6)[:2], max_message=10)


def test_reader_does_not_count_interleaved_ping_against_max_message() -> None:
    data = (
        client(Opcode.TEXT, b"a" * 60, fin=False)
        + client(Opcode.PING, b"p" * 8)
        + client(Opcode.CONT, b"b" * 4)
    )
    assert FrameReader(64).feed(data) == [(OP_PING, b"p" * 8), (OP_TEXT, b"a" * 60 + b"b" * 4)]


@pytest.mark.parametrize(
    "chunks",
    [
        [client(Opcode.TEXT, b"\xff")],
        [client(Opcode.TEXT, b"ok \xed\xa0\x80")],  # a UTF-16 surrogate encoded as UTF-8
        [client(Opcode.TEXT, b"\xc3", fin=False), client(Opcode.CONT, b"A")],
        [client(Opcode.TEXT, b"a", fin=False), client(Opcode.CONT, b"\xc3")],  # truncated at the end
    ],
    ids=["single-frame", "surrogate", "split-invalid", "truncated-final"],
)
def test_reader_rejects_invalid_utf8_text_with_1007(chunks: list[bytes]) -> None:
    fails_with(1007, *chunks)


# --- http1: parse_head --------------------------------------------------------------------------------

POST_LINE = b"POST /hook/cli_a HTTP/1.1"


def head(*lines: bytes, request_line: bytes = POST_LINE) -> bytes:
    return b"\r\n".join((request_line, *lines))


def test_parse_head_accepts_a_typical_webhook_post() -> None:
    parsed = parse_head(
        head(
            b"Host: relay.example:8080",
            b"Content-Type: application/json; charset=utf-8",
            b"Content-Length: 42",
            b"X-Lark-Signature: 0123abcdef",
            b"x-lark-request-nonce:\tabc  ",
        )
    )
    assert parsed == Head(
        method="POST",
        path="/hook/cli_a",
        query="",
        headers=[
            ("Host", "relay.example:8080"),
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", "42"),
            ("X-Lark-Signature", "0123abcdef"),
            ("x-lark-request-nonce", "abc"),
        ],
        content_length=42,
        close=False,
    )


def test_parse_head_splits_query_from_path_and_defaults_content_length_to_zero() -> None:
    parsed = parse_head(head(b"Host: x", request_line=b"GET /sub/abc?since=3&x=a?b HTTP/1.1"))
    assert parsed is not None
    assert (parsed.method, parsed.path, parsed.query) == ("GET", "/sub/abc", "since=3&x=a?b")
    assert parsed.content_length == 0


@pytest.mark.parametrize("value", [b"close", b"Close", b"keep-alive, close", b"Upgrade ,CLOSE "])
def test_parse_head_sets_close_for_connection_close_token(value: bytes) -> None:
    parsed = parse_head(head(b"Host: x", b"Connection: " + value))
    assert parsed is not None and parsed.close


@pytest.mark.parametrize("value", [b"keep-alive", b"Upgrade", b"closed"])
def test_parse_head_keeps_connection_open_without_close_token(value: bytes) -> None:
    parsed = parse_head(head(b"Host: x", b"Connection: " + value))
    assert parsed is not None and not parsed.close


HAND_OFF = {
    "http-1.0": head(b"Host: x", request_line=b"POST /hook/cli_a HTTP/1.0"),
    "lowercase-method": head(b"Host: x", request_line=b"post /hook/cli_a HTTP/1.1"),
    "put": head(b"Host: x", request_line=b"PUT /hook/cli_a HTTP/1.1"),
    "options": head(b"Host: x", request_line=b"OPTIONS * HTTP/1.1"),
    "percent-in-target": head(b"Host: x", request_line=b"POST /hook/cli%5Fa HTTP/1.1"),
    "fragment-in-target": head(b"Host: x", request_line=b"POST /hook#frag HTTP/1.1"),
    "absolute-form-target": head(b"Host: x", request_line=b"POST http://x/hook HTTP/1.1"),
    "double-space": head(b"Host: x", request_line=b"POST  /hook HTTP/1.1"),
    "transfer-encoding": head(b"Host: x", b"Transfer-Encoding: chunked"),
    "transfer-encoding-with-content-length": head(
        b"Host: x", b"Content-Length: 5", b"Transfer-Encoding: chunked"
    ),
    "two-content-lengths": head(b"Host: x", b"Content-Length: 5", b"Content-Length: 5"),
    "content-length-list": head(b"Host: x", b"Content-Length: 5, 5"),
    "non-digit-content-length": head(b"Host: x", b"Content-Length: abc"),
    "negative-content-length": head(b"Host: x", b"Content-Length: -1"),
    "signed-content-length": head(b"Host: x", b"Content-Length: +5"),
    "empty-content-length": head(b"Host: x", b"Content-Length: "),
    "huge-content-length": head(b"Host: x", b"Content-Length: 1234567890123456789"),
    "expect": head(b"Host: x", b"Expect: 100-continue"),
    "obs-fold-space": head(b"Host: x", b"X-A: one", b" two"),
    "obs-fold-tab": head(b"Host: x", b"X-A: one", b"\ttwo"),
    "header-without-colon": head(b"Host: x", b"NoColonHere"),
    "space-before-colon": head(b"Host : x"),
    "non-ascii-value": head(b"Host: x", b"X-Name: caf\xc3\xa9"),
    "bare-cr": head(b"Host: x", b"X-Name: a\rb"),
    "bare-lf": head(b"Host: x", b"X-Name: a\nb"),
    "nul": head(b"Host: x", b"X-Name: a\x00b"),
    "empty-line-inside-head": head(b"Host: x", b""),
    "junk-before-a-field-on-its-line": head(b"Host: x", b"@junk X-A: a"),
    "non-ascii-name": head(b"Host: x", b"X-Caf\xc3\xa9: a"),
    "bare-lf-before-a-valid-field": head(b"Host: x", b"X-A: a\nX-B: b"),
    "line-without-crlf-after-valid-ones": head(b"Host: x", b"X-A: a", b"X-B: b\r"),
    # what llhttp must judge, so both servers answer alike (issue 19)
    "no-host": head(b"X-A: a"),
    "two-hosts": head(b"Host: x", b"Host: y"),
    "request-line-over-8190-bytes": head(b"Host: x", request_line=b"POST /" + b"a" * 9000 + b" HTTP/1.1"),
    "header-line-over-8190-bytes": head(b"Host: x", b"X-A: " + b"a" * 9000),
    "more-than-64-header-lines": head(b"Host: x", *[b"X-%d: a" % i for i in range(64)]),
}


@pytest.mark.parametrize("data", list(HAND_OFF.values()), ids=list(HAND_OFF))
def test_parse_head_hands_off_anything_outside_the_strict_subset(data: bytes) -> None:
    assert parse_head(data) is None


# --- http1: response ----------------------------------------------------------------------------------


def h11_parse(raw: bytes) -> tuple[h11.Response, bytes, h11.Connection]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    resp = conn.next_event()
    assert isinstance(resp, h11.Response)
    body = b""
    while not isinstance(event := conn.next_event(), h11.EndOfMessage):
        assert isinstance(event, h11.Data), event
        body += event.data
    return resp, body, conn


def test_response_is_a_valid_http11_json_response() -> None:
    body = json.dumps({"code": 0, "msg": "ok ✓"}).encode()
    resp, got, conn = h11_parse(response(200, body))
    headers = {k.decode(): v.decode() for k, v in resp.headers}
    assert (resp.status_code, resp.reason, resp.http_version) == (200, b"OK", b"1.1")
    assert got == body and int(headers["content-length"]) == len(body)
    assert headers["content-type"].startswith("application/json")
    assert email.utils.parsedate_to_datetime(headers["date"]).tzinfo is not None
    assert "connection" not in headers
    assert conn.our_state is h11.DONE and conn.their_state is h11.DONE  # keep-alive


def test_response_adds_extra_headers_and_connection_close() -> None:
    raw = response(429, b'{"error":"slow down"}', {"Retry-After": "3", "X-Request-Id": "r1"}, close=True)
    resp, got, conn = h11_parse(raw)
    headers = {k.decode(): v.decode() for k, v in resp.headers}
    assert (resp.status_code, resp.reason) == (429, b"Too Many Requests")
    assert got == b'{"error":"slow down"}' and headers["content-length"] == str(len(got))
    assert (headers["retry-after"], headers["x-request-id"], headers["connection"]) == ("3", "r1", "close")
    assert conn.their_state is h11.MUST_CLOSE


def test_response_with_empty_body_and_unknown_status() -> None:
    resp, got, _ = h11_parse(response(599, b""))
    assert (resp.status_code, resp.reason, got) == (599, b"Unknown", b"")
    assert dict(resp.headers)[b"content-length"] == b"0"


def test_response_reuses_a_small_answer_within_its_second_and_rebuilds_it_with_the_next_date(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1_800_000_000.25]
    monkeypatch.setattr(http1, "time", types.SimpleNamespace(time=lambda: now[0]))
    body = b'{"msg":"success"}'
    first = response(200, body)
    assert response(200, body) is first  # built once for this second
    other = response(200, b'{"msg":"other"}')
    assert h11_parse(other)[1] == b'{"msg":"other"}'
    closing = response(200, body, close=True)
    assert h11_parse(closing)[2].their_state is h11.MUST_CLOSE
    with_headers = response(200, body, {"X-Request-Id": "r1"})
    assert (b"x-request-id", b"r1") in h11_parse(with_headers)[0].headers
    assert response(200, body) is first  # neither of those replaced it
    now[0] += 1
    later = response(200, body)
    dates = [dict(h11_parse(raw)[0].headers)[b"date"] for raw in (first, later)]
    assert dates[0] != dates[1]
    assert email.utils.parsedate_to_datetime(dates[1].decode()).timestamp() == int(now[0])
