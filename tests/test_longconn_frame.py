"""The hand-rolled ``pbbp2.Frame`` codec against lark-oapi's generated ``pbbp2_pb2``.

long-connection.md §1 "Frame format".
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from lark_oapi.ws.pb.pbbp2_pb2 import Frame as PbFrame

from wslarkbot.exceptions import ProtocolError
from wslarkbot.relay.longconn.frame import (
    METHOD_CONTROL,
    METHOD_DATA,
    Frame,
    decode_frame,
    encode_frame,
    event_frames,
    pong_frame,
)


@pytest.fixture(autouse=True, scope="module")
def _close_lark_import_time_loop() -> Iterator[None]:
    """Importing ``lark_oapi.ws`` creates an event loop at import (client.py 34-38); close it when done."""
    yield
    import lark_oapi.ws.client as lark_ws_client

    if not lark_ws_client.loop.is_running():
        lark_ws_client.loop.close()


def _pb(frame: Frame) -> PbFrame:
    pb = PbFrame()
    pb.SeqID, pb.LogID, pb.service, pb.method = frame.seq_id, frame.log_id, frame.service, frame.method
    for key, value in frame.headers:
        header = pb.headers.add()
        header.key, header.value = key, value
    if frame.payload_encoding is not None:
        pb.payload_encoding = frame.payload_encoding
    if frame.payload_type is not None:
        pb.payload_type = frame.payload_type
    if frame.payload is not None:
        pb.payload = frame.payload
    if frame.log_id_new is not None:
        pb.LogIDNew = frame.log_id_new
    return pb


FRAMES = [
    Frame(),
    Frame(seq_id=2**64 - 1, log_id=300, service=2**31 - 1, method=METHOD_DATA),
    Frame(service=-5, method=METHOD_CONTROL, headers=[("type", "ping")]),
    Frame(
        seq_id=7,
        log_id=8,
        service=123456,
        method=METHOD_DATA,
        headers=[("type", "event"), ("message_id", "m1"), ("sum", "1"), ("seq", "0"), ("键", "值 ✓")],
        payload_encoding="gzip",
        payload_type="json",
        payload=b'{"a":1}' * 1000,
        log_id_new="log-new",
    ),
    Frame(payload=b""),
]


@pytest.mark.parametrize("frame", FRAMES)
def test_encoding_is_byte_identical_to_the_official_protobuf(frame: Frame) -> None:
    assert encode_frame(frame) == _pb(frame).SerializeToString()


@pytest.mark.parametrize("frame", FRAMES)
def test_decoding_official_bytes_gives_the_same_frame(frame: Frame) -> None:
    assert decode_frame(_pb(frame).SerializeToString()) == frame


def test_official_parser_reads_our_event_fragments() -> None:
    payload = b"x" * 40_000
    frames = event_frames(
        payload, message_id="m", trace_id="t", service=9, seq_id=1, fragment_bytes=16_384, timestamp_ms=5
    )
    assert len(frames) == 3
    parsed = []
    for frame in frames:
        pb = PbFrame()
        pb.ParseFromString(encode_frame(frame))
        parsed.append(pb)
    assert b"".join(pb.payload for pb in parsed) == payload
    headers = [{h.key: h.value for h in pb.headers} for pb in parsed]
    assert [h["seq"] for h in headers] == ["0", "1", "2"]
    assert {h["sum"] for h in headers} == {"3"} and {h["message_id"] for h in headers} == {"m"}
    assert {h["type"] for h in headers} == {"event"} and parsed[0].method == METHOD_DATA


def test_pong_carries_every_client_config_key() -> None:
    config = {"ReconnectCount": -1, "ReconnectInterval": 120, "ReconnectNonce": 30, "PingInterval": 120}
    pb = PbFrame()
    pb.ParseFromString(encode_frame(pong_frame(42, config)))
    assert (pb.method, pb.service, pb.headers[0].key, pb.headers[0].value) == (0, 42, "type", "pong")
    assert json.loads(pb.payload) == config


def test_unknown_fields_are_skipped() -> None:
    data = encode_frame(Frame(headers=[("type", "ping")])) + bytes([0x50, 0x01, 0x5D, 1, 2, 3, 4])  # f10, f11
    assert decode_frame(data).header("type") == "ping"


@pytest.mark.parametrize(
    "data",
    [
        b"\x08",  # truncated varint
        b"\x08\x01\x10\x01\x18\x01",  # method (4) missing
        encode_frame(Frame())[:-1] + b"\x42\x05ab",  # truncated length-delimited
        encode_frame(Frame()) + b"\x2a\x02\x0a\x00",  # header without value
        encode_frame(Frame()) + b"\x0b",  # wire type 3 (groups)
    ],
)
def test_malformed_frames_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_frame(data)
