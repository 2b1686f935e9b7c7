"""A strict HTTP/1.1 request-head parser and response writer for the fast path, without I/O.

It accepts only the plain requests the hot routes get (RFC 9112): ``GET``/``POST``, an origin-form target
of visible ASCII without percent-escapes, ``HTTP/1.1``, token header names, ASCII values, at most one
``Content-Length``, and no ``Transfer-Encoding``, ``Expect`` or folded lines. Anything else is not an
error here: :func:`parse_head` returns None and the connection is handed to aiohttp, whose full parser
answers it (or refuses it) exactly as before. So this parser can stay small without ever misreading
where a request ends.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import NamedTuple

from ... import __version__

__all__ = ["MAX_HEAD_BYTES", "Head", "parse_head", "response"]

#: A head longer than this is left to aiohttp (which refuses lines over 8 KiB).
MAX_HEAD_BYTES = 16 * 1024

_REQUEST_LINE = re.compile(r"(GET|POST) (/[!-~]*) HTTP/1\.1")
# RFC 9110 §5.6.2 token (header names).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Bytes a head may contain besides CR LF: visible ASCII, SP, HTAB (RFC 9110 §5.5 field values, ASCII only).
_HEAD_BYTES = bytes(range(0x20, 0x7F)) + b"\t"
_SERVER = f"wslarkbot/{__version__}".encode("ascii")
_REASONS = {int(s): s.phrase.encode("ascii") for s in HTTPStatus}


class Head(NamedTuple):
    """A parsed request head."""

    method: str
    path: str
    query: str
    #: ``(name, value)`` in arrival order, names as sent.
    headers: list[tuple[str, str]]
    content_length: int
    #: ``Connection: close`` was sent.
    close: bool


def parse_head(head: bytes) -> Head | None:
    """Parse the head (request line + header lines, without the final blank line).

    Returns None for anything outside the strict subset in the module docstring.
    """
    # Nothing but visible ASCII, SP and HTAB, and CR/LF only as line ends (C-speed checks, no per-byte loop).
    crlf = head.count(b"\r\n")
    if head.translate(None, b"\r\n" + _HEAD_BYTES) or head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        return None
    lines = head.decode("ascii").split("\r\n")
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        return None
    target = m.group(2)
    if "%" in target or "#" in target:
        return None
    headers: list[tuple[str, str]] = []
    length = -1
    close = False
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        # obs-fold, a missing colon, whitespace before it, a non-token name: aiohttp decides
        if not colon or not (name.replace("-", "").isalnum() or _TOKEN.fullmatch(name)):
            return None
        value = value.strip(" \t")
        lname = name.lower()
        if lname == "content-length":
            if length >= 0 or not value.isdigit() or len(value) > 18:
                return None
            length = int(value)
        elif lname in ("transfer-encoding", "expect"):
            return None
        elif lname == "connection" and "close" in (t.strip() for t in value.lower().split(",")):
            close = True
        headers.append((name, value))
    path, _, query = target.partition("?")
    return Head(m.group(1), path, query, headers, max(length, 0), close)


_date = (0, b"")


def _date_line() -> bytes:
    """``Date: ...\\r\\n`` (RFC 9110 §6.6.1), formatted at most once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n")
    return _date[1]


def response(
    status: int, body: bytes, headers: dict[str, str] | None = None, *, close: bool = False
) -> bytes:
    """A complete ``HTTP/1.1`` response with a JSON ``body``."""
    reason = _REASONS.get(status, b"Unknown")
    parts = [
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n"
        % (status, reason, len(body)),
        _date_line(),
        b"Server: " + _SERVER + b"\r\n",
    ]
    if headers:
        for name, value in headers.items():
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)
