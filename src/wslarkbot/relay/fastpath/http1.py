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
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import NamedTuple

from ... import __version__

__all__ = ["MAX_HEAD_BYTES", "Head", "parse_head", "response"]

#: A head longer than this is left to aiohttp (which refuses lines over 8 KiB).
MAX_HEAD_BYTES = 16 * 1024
#: aiohttp's (llhttp's) longest request or header line; a head holding a longer one is left to it.
_MAX_LINE = 8190
#: More header lines than this are left to aiohttp (webhooks and subscriptions send about ten).
MAX_FIELDS = 64

# RFC 9112 §3 request line (GET/POST, origin-form of visible ASCII, HTTP/1.1), then header lines: an
# RFC 9110 §5.6.2 token, ':', a value of visible ASCII, SP and HTAB (§5.5, ASCII only), CRLF. Each field
# line must match from its start (``^``, MULTILINE) to its CRLF, so the head is valid exactly when there
# are as many matches as lines: one C-level pass parses and checks all the lines (a Python loop over
# the lines cost more than the rest of the parsing).
_REQUEST_LINE = re.compile(rb"(GET|POST) (/[!-~]*) HTTP/1\.1")
_FIELD = re.compile(r"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([ -~\t]*)\r\n", re.MULTILINE)
_CONTENT_LENGTH = re.compile(r"\r\ncontent-length:[ \t]*([0-9]{1,18})[ \t]*\r\n")
_CONNECTION = re.compile(r"\r\nconnection:([^\r]*)")
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

    Returns None for anything outside the strict subset in the module docstring, and for what aiohttp's
    parser (llhttp) must judge so both servers answer alike: a head over 8 KiB with a line over 8,190
    bytes, more than :data:`MAX_FIELDS` header lines, or not exactly one ``Host``.
    """
    if len(head) > _MAX_LINE and max(map(len, head.split(b"\r\n"))) > _MAX_LINE:
        return None
    end = head.find(b"\r\n")
    if end < 0:
        m = _REQUEST_LINE.fullmatch(head)
        block = ""
    else:
        m = _REQUEST_LINE.fullmatch(head, 0, end)
        # latin-1 never fails; a byte beyond ASCII then fails _FIELD's value class (the line count check).
        block = head[end + 2 :].decode("latin-1") + "\r\n"
    if m is None or not block:  # no header lines: no Host
        return None
    target = m.group(2).decode("ascii")
    if "%" in target or "#" in target:
        return None
    length = 0
    close = False
    headers: list[tuple[str, str]] = _FIELD.findall(block)
    if len(headers) > MAX_FIELDS:
        return None
    if block:
        if len(headers) != block.count("\n"):  # a line _FIELD could not match from its start to its CRLF
            return None
        low = "\r\n" + block.lower()
        # A false alarm ("x-expect:") only hands the request to aiohttp; none can be missed.
        if "transfer-encoding:" in low or "expect:" in low or low.count("\r\nhost:") != 1:
            return None
        n = low.count("\r\ncontent-length:")
        if n:
            cl = _CONTENT_LENGTH.search(low)
            if n > 1 or cl is None:
                return None
            length = int(cl.group(1))
        if "\r\nconnection:" in low:
            close = any(
                "close" in (t.strip() for t in value.split(",")) for value in _CONNECTION.findall(low)
            )
        if " \r\n" in block or "\t\r\n" in block:  # trailing whitespace (rare): strip it
            headers = [(name, value.rstrip(" \t")) for name, value in headers]
    path, _, query = target.partition("?")
    return Head(m.group(1).decode("ascii"), path, query, headers, length, close)


_date = (0, b"")
#: Complete small answers (``{"msg":"success"}`` and the like) of the current second: most webhooks get
#: the same bytes, built once per ``Date``.
_answers: dict[tuple[int, bytes], bytes] = {}
_MAX_CACHED_BODY = 256
_MAX_CACHED = 64


def _date_line() -> bytes:
    """``Date: ...\r\n`` (RFC 9110 §6.6.1), formatted at most once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n")
        _answers.clear()
    return _date[1]


def response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None, *, close: bool = False
) -> bytes:
    """A complete ``HTTP/1.1`` response with a JSON ``body``."""
    date = _date_line()
    cacheable = not headers and not close and len(body) <= _MAX_CACHED_BODY
    if cacheable:
        cached = _answers.get((status, body))
        if cached is not None:
            return cached
    reason = _REASONS.get(status, b"Unknown")
    parts = [
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n"
        % (status, reason, len(body)),
        date,
        b"Server: " + _SERVER + b"\r\n",
    ]
    if headers:
        for name, value in headers.items():
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    data = b"".join(parts)
    if cacheable and len(_answers) < _MAX_CACHED:
        _answers[(status, body)] = data
    return data
