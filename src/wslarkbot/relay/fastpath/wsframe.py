"""RFC 6455 framing for the server side of a WebSocket, without I/O.

:func:`encode_frame` builds a server frame (unmasked, §5.1); :class:`FrameReader` parses what a client
sends: masked frames (§5.3), fragmented messages (§5.4), control frames (§5.5), with the errors that end
a connection as :class:`WebSocketError` carrying the close code to send (§7.4.1). No extensions are
negotiated, so the RSV bits must be zero (§5.2).
"""

from __future__ import annotations

import base64
import hashlib

from ...exceptions import ProtocolError
from ..ws_policy import CLOSE_INVALID_DATA, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameReader",
    "WebSocketError",
    "accept_key",
    "close_payload",
    "encode_frame",
    "parse_close",
    "valid_key",
]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_DATA = (OP_TEXT, OP_BINARY)
_CONTROL = (OP_CLOSE, OP_PING, OP_PONG)

#: §1.3: the GUID appended to Sec-WebSocket-Key.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# §7.4.1 close codes used here.


class WebSocketError(ProtocolError):
    """The client broke RFC 6455 (or a size limit); close the connection with :attr:`code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def valid_key(key: str) -> bool:
    """§4.2.1: ``Sec-WebSocket-Key`` is the base64 of 16 bytes."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def accept_key(key: str) -> str:
    """§4.2.2: the ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def encode_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, unmasked frame (§5.2) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def close_payload(code: int, reason: str = "") -> bytes:
    """§5.5.1: a close frame's body (code, then at most 123 bytes of UTF-8 reason)."""
    # Cut at 123 bytes without splitting a character (the peer must reject invalid UTF-8, §8.1).
    return code.to_bytes(2, "big") + reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")


def parse_close(payload: bytes) -> int | None:
    """The close code of a client's close frame (None: no code given, §7.1.5 "1005").

    Raises:
        WebSocketError: a one-byte body, a code a peer may not send, or a reason that is not UTF-8.
    """
    if not payload:
        return None
    if len(payload) < 2:
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "close frame with a one-byte body")
    code = int.from_bytes(payload[:2], "big")
    # §7.4.1/§7.4.2: 1004-1006 and 1015 are never sent; below 1000 and 1016-2999 are unassigned.
    if code < 1000 or code in (1004, 1005, 1006, 1015) or 1016 <= code < 3000 or code >= 5000:
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
    return code


def _unmask(data: bytes, mask: bytes) -> bytes:
    """§5.3: XOR with the 4-byte mask, as one big-integer operation (no per-byte Python loop)."""
    n = len(data)
    if not n:
        return data
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class FrameReader:
    """Parses a client's bytes into messages and control frames.

    Args:
        max_message: the largest (reassembled) data message accepted; larger ones raise 1009.

    :meth:`feed` returns ``(opcode, payload)`` pairs: ``OP_TEXT``/``OP_BINARY`` for whole messages (text
    already checked to be UTF-8), ``OP_PING``/``OP_PONG``/``OP_CLOSE`` for control frames.
    """

    __slots__ = ("_buf", "_frag_op", "_frag_size", "_frags", "max_message")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buf = b""
        self._frag_op = 0  # opcode of the message being reassembled; 0: none
        self._frags: list[bytes] | None = None
        self._frag_size = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Parse ``data`` (and what was left over); return the complete messages and control frames.

        Raises:
            WebSocketError: a protocol violation or an oversized message; the connection must close.
        """
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
            if not b1 & 0x80:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "client frame is not masked")
            fin = b0 & 0x80
            op = b0 & 0x0F
            n = b1 & 0x7F
            i = pos + 2
            if n == 126:
                if end - i < 2:
                    break
                n = int.from_bytes(buf[i : i + 2], "big")
                i += 2
            elif n == 127:
                if end - i < 8:
                    break
                n = int.from_bytes(buf[i : i + 8], "big")
                i += 8
            if op in _CONTROL:
                if n > 125 or not fin:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "control frame too long or fragmented")
            elif op not in _DATA and op != OP_CONTINUATION:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {op}")
            if op not in _CONTROL and self._frag_size + n > self.max_message:
                raise WebSocketError(CLOSE_TOO_BIG, f"message larger than {self.max_message} bytes")
            if end - i < 4 + n:
                break
            payload = _unmask(buf[i + 4 : i + 4 + n], buf[i : i + 4])
            pos = i + 4 + n
            if op in _CONTROL:
                out.append((op, payload))
            elif op == OP_CONTINUATION:
                if self._frags is None:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
                self._frags.append(payload)
                self._frag_size += n
                if fin:
                    out.append(self._message(self._frag_op, b"".join(self._frags)))
                    self._frags, self._frag_op, self._frag_size = None, 0, 0
            elif self._frags is not None:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "new message before the fragmented one ended")
            elif fin:
                out.append(self._message(op, payload))
            else:
                self._frags, self._frag_op, self._frag_size = [payload], op, n
        self._buf = buf[pos:] if pos < end else b""
        return out

    @staticmethod
    def _message(op: int, payload: bytes) -> tuple[int, bytes]:
        if op == OP_TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise WebSocketError(CLOSE_INVALID_DATA, "text message is not UTF-8") from None
        return op, payload
