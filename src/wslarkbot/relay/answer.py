"""What the relay answers an HTTP request, independent of the server that writes it. No I/O.

The webhook and reply logic (:mod:`.publish`) and the subscription checks (:mod:`.subscribe`) return an
:class:`Answer`; the aiohttp routes turn it into a ``web.Response`` (:func:`.routes.to_response`) and the
fast path (:mod:`.fastpath`) serialises it itself, so both servers answer the same status, body and
headers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["INTERNAL_ERROR", "SUCCESS", "Answer", "Origin", "error_answer"]


class Origin(NamedTuple):
    """Where a request came from, for log lines: method, path and peer address."""

    method: str
    path: str
    remote: str | None


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: ``status``, a JSON ``body`` (UTF-8 bytes) and extra ``headers``."""

    status: int
    body: bytes
    headers: Mapping[str, str] | None = None


#: The answer to an event a subscriber received (what nchan's Lua answered, and Feishu expects).
SUCCESS = Answer(200, b'{"msg":"success"}')


def error_answer(status: int, msg: str, headers: Mapping[str, str] | None = None) -> Answer:
    """``{"msg": msg}`` with ``status`` (Feishu reads JSON; people read ``msg``)."""
    return Answer(status, json.dumps({"msg": msg}, ensure_ascii=False).encode("utf-8"), headers)


#: The answer to a request whose handling raised (a bug): the same on both servers (logged with a traceback
#: by :func:`~.state.internal_error`).
INTERNAL_ERROR = error_answer(500, "internal relay error")
