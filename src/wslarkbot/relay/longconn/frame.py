"""``pbbp2.Frame``: the protobuf message of Feishu's long connection, encoded by hand. No I/O.

Implements /work/shared/feishu/long-connection.md §1 "Frame format" (the proto2 schema shipped as
``lark_oapi/ws/pb/pbbp2_pb2.py``)::

    message Header { required string key = 1; required string value = 2; }
    message Frame {
      required uint64 SeqID = 1;  required uint64 LogID = 2;
      required int32 service = 3; required int32 method = 4;   // 0 CONTROL, 1 DATA
      repeated Header headers = 5;
      optional string payload_encoding = 6; optional string payload_type = 7;
      optional bytes payload = 8; optional string LogIDNew = 9;
    }

Only this one message is needed, so the relay does not depend on the ``protobuf`` package: varints,
length-delimited fields, and skipping of unknown fields (wire types 0, 1, 2, 5) are all there is.
The encoder writes fields in field-number order and omits unset optional fields, which is what the
official ``SerializeToString()`` does, so the bytes are identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ...exceptions import ProtocolError

__all__ = [
    "METHOD_CONTROL",
    "METHOD_DATA",
    "Frame",
    "decode_frame",
    "encode_frame",
    "event_frames",
    "pong_frame",
]

METHOD_CONTROL = 0
METHOD_DATA = 1

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_U64 = (1 << 64) - 1


@dataclass
class Frame:
    """One ``pbbp2.Frame``. ``headers`` keeps order and duplicates, as protobuf does.

    Optional fields are ``None`` when absent (proto2 presence), so ``b""`` and "no payload" differ.
    """

    seq_id: int = 0
    log_id: int = 0
    service: int = 0
    method: int = METHOD_CONTROL
    headers: list[tuple[str, str]] = field(default_factory=list)
    payload_encoding: str | None = None
    payload_type: str | None = None
    payload: bytes | None = None
    log_id_new: str | None = None

    def header(self, key: str, default: str | None = None) -> str | None:
        """The first value of header ``key`` (the SDK's ``_get_by_key``), or ``default``."""
        for k, v in self.headers:
            if k == key:
                return v
        return default


# --- encoding -------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= _U64  # negative int32/int64 are sent as 10-byte two's complement (protobuf encoding spec)
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _len_field(number: int, data: bytes) -> bytes:
    return _key(number, _LEN) + _varint(len(data)) + data


def _encode_header(key: str, value: str) -> bytes:
    return _len_field(1, key.encode("utf-8")) + _len_field(2, value.encode("utf-8"))


def encode_frame(frame: Frame) -> bytes:
    """Serialize ``frame`` exactly as ``pbbp2_pb2.Frame.SerializeToString()`` would."""
    parts: list[bytes] = [
        _key(1, _VARINT) + _varint(frame.seq_id),
        _key(2, _VARINT) + _varint(frame.log_id),
        _key(3, _VARINT) + _varint(frame.service),
        _key(4, _VARINT) + _varint(frame.method),
    ]
    parts.extend(_len_field(5, _encode_header(k, v)) for k, v in frame.headers)
    if frame.payload_encoding is not None:
        parts.append(_len_field(6, frame.payload_encoding.encode("utf-8")))
    if frame.payload_type is not None:
        parts.append(_len_field(7, frame.payload_type.encode("utf-8")))
    if frame.payload is not None:
        parts.append(_len_field(8, bytes(frame.payload)))
    if frame.log_id_new is not None:
        parts.append(_len_field(9, frame.log_id_new.encode("utf-8")))
    return b"".join(parts)


# --- decoding -------------------------------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtocolError("truncated varint in pbbp2 frame")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise ProtocolError("varint too long in pbbp2 frame")


def _fields(data: bytes) -> Iterable[tuple[int, int, int | bytes]]:
    """Yield ``(number, wire_type, value)``; length-delimited values as bytes, fixed ones skipped as ints."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ProtocolError("field number 0 in pbbp2 frame")
        if wire_type == _VARINT:
            value, pos = _read_varint(data, pos)
            yield number, wire_type, value
        elif wire_type == _LEN:
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise ProtocolError("truncated length-delimited field in pbbp2 frame")
            yield number, wire_type, data[pos : pos + size]
            pos += size
        elif wire_type in (_I64, _I32):
            width = 8 if wire_type == _I64 else 4
            if pos + width > len(data):
                raise ProtocolError("truncated fixed-width field in pbbp2 frame")
            yield number, wire_type, int.from_bytes(data[pos : pos + width], "little")
            pos += width
        else:
            raise ProtocolError(f"unsupported protobuf wire type {wire_type} in pbbp2 frame")


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise ProtocolError("expected a string field in pbbp2 frame")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("string field of pbbp2 frame is not UTF-8") from exc


def _decode_header(data: bytes) -> tuple[str, str]:
    key = value = None
    for number, wire_type, raw in _fields(data):
        if number == 1 and wire_type == _LEN:
            key = _text(raw)
        elif number == 2 and wire_type == _LEN:
            value = _text(raw)
    if key is None or value is None:
        raise ProtocolError("pbbp2 Header lacks its required key or value")
    return key, value


def decode_frame(data: bytes) -> Frame:
    """Parse a ``pbbp2.Frame``; unknown fields are skipped, a missing required field is an error.

    Raises:
        ProtocolError: not a well-formed frame.
    """
    frame = Frame()
    seen: set[int] = set()
    for number, wire_type, raw in _fields(bytes(data)):
        if number in (1, 2, 3, 4) and wire_type == _VARINT and isinstance(raw, int):
            seen.add(number)
            if number == 1:
                frame.seq_id = raw
            elif number == 2:
                frame.log_id = raw
            elif number == 3:
                frame.service = _int32(raw)
            else:
                frame.method = _int32(raw)
        elif wire_type == _LEN and isinstance(raw, bytes):
            if number == 5:
                frame.headers.append(_decode_header(raw))
            elif number == 6:
                frame.payload_encoding = _text(raw)
            elif number == 7:
                frame.payload_type = _text(raw)
            elif number == 8:
                frame.payload = raw
            elif number == 9:
                frame.log_id_new = _text(raw)
    missing = {1, 2, 3, 4} - seen
    if missing:
        raise ProtocolError(f"pbbp2 Frame lacks required field(s) {sorted(missing)}")
    return frame


# --- the frames the gateway sends -----------------------------------------------------------------


def pong_frame(service: int, client_config: Mapping[str, int]) -> Frame:
    """CONTROL ``type=pong`` with the ClientConfig JSON; the SDK applies it mid-session (§1 "Ping/pong")."""
    return Frame(
        service=service,
        method=METHOD_CONTROL,
        headers=[("type", "pong")],
        payload=json.dumps(dict(client_config), separators=(",", ":")).encode("utf-8"),
    )


def event_frames(
    payload: bytes,
    *,
    message_id: str,
    trace_id: str,
    service: int,
    seq_id: int,
    fragment_bytes: int,
    timestamp_ms: int,
    message_type: str = "event",
) -> list[Frame]:
    """DATA frames for one event or callback, split into ``sum`` fragments (§1 "Fragmentation").

    Every fragment has the same ``message_id``; ``seq`` is 0-based; the client concatenates ``seq 0..sum-1``
    within its 5 s reassembly TTL and answers once.
    """
    chunks = [payload[i : i + fragment_bytes] for i in range(0, len(payload), fragment_bytes)] or [b""]
    return [
        Frame(
            seq_id=seq_id,
            log_id=seq_id,
            service=service,
            method=METHOD_DATA,
            headers=[
                ("type", message_type),
                ("message_id", message_id),
                ("sum", str(len(chunks))),
                ("seq", str(index)),
                ("trace_id", trace_id),
                ("timestamp", str(timestamp_ms)),
            ],
            payload=chunk,
        )
        for index, chunk in enumerate(chunks)
    ]
