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

_REQUEST_LINE = re.compile(rb"(GET|POST) (/[!-~]*) HTTP/1\.1")
# RFC 9110 §5.1 token name, ':', OWS, a value of visible ASCII/SP/HTAB, OWS (stripped below).
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([ -~\t]*)")
_SERVER = f"wslarkbot/{__version__}".encode("ascii")


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
    lines = head.split(b"\r\n")
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        return None
    target = m.group(2)
    if b"%" in target or b"#" in target:
        return None
    headers: list[tuple[str, str]] = []
    length = -1
    close = False
    for line in lines[1:]:
        f = _FIELD.fullmatch(line)
        if f is None:  # obs-fold, bare CR/LF, control characters, non-ASCII, no colon: aiohttp decides
            return None
        name = f.group(1).decode("ascii")
        value = f.group(2).rstrip(b" \t").decode("ascii")
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
    path, _, query = target.decode("ascii").partition("?")
    return Head(m.group(1).decode("ascii"), path, query, headers, max(length, 0), close)


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
    try:
        reason = HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        reason = b"Unknown"
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
