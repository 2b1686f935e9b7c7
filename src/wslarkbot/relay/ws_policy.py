"""What the relay does about a subscriber's WebSocket going wrong, for both servers: one close code and
one log line per case. No I/O: the servers close the connection themselves.

* a message larger than ``max_ws_message_bytes``: close **1009** (RFC 6455 "message too big");
* any other protocol violation: close with the code the parser chose (1002, 1007, ...);
* a subscriber that cannot keep up: close **1013** ("try again later", :func:`~.subscribe.too_slow`);
* the relay stopping: close **1012** ("service restart": reconnect, to another node at once); an internal
  error after the switch: **1011**.

Each counts as ``rejected`` in ``/status``. And the timing rules both servers follow:

* **heartbeat** (``--heartbeat`` seconds, :func:`heartbeat_step`): a connection silent for that long is
  pinged; one that has not answered within half of it is dropped (reported 1006, logged at DEBUG). aiohttp's
  ``heartbeat=`` implements the same rule, the fast path calls :func:`heartbeat_step` from its sweeper;
* **closing** (:data:`CLOSE_TIMEOUT`): after the relay's close frame, the peer has that long to answer with
  its own before the connection is dropped.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # no import of the relay's state: the fast path's frame codec takes its codes from here
    from .state import RelayState

__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_TIMEOUT",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_INVALID_DATA",
    "CLOSE_NO_STATUS",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_SERVICE_RESTART",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_AGAIN_LATER",
    "Beat",
    "heartbeat_step",
    "missed_heartbeat",
    "ws_failed",
]

log = logging.getLogger("wslarkbot.relay")

# RFC 6455 §7.4.1 and the IANA registry; 1005 and 1006 are never sent, only reported.
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013

#: Seconds the peer has to answer the relay's close frame before the connection is dropped.
CLOSE_TIMEOUT = 1.0


class Beat(enum.Enum):
    """What the heartbeat does to one connection now."""

    WAIT = "wait"
    PING = "ping"
    DROP = "drop"


def heartbeat_step(now: float, last_seen: float, ping_sent: float, interval: float) -> Beat:
    """The heartbeat rule: ping after ``interval`` seconds of silence, drop if that ping is unanswered for
    ``interval / 2`` seconds (``ping_sent`` 0: no ping outstanding; times in monotonic seconds)."""
    if not interval:
        return Beat.WAIT
    if ping_sent:
        return Beat.DROP if now - ping_sent >= interval / 2 else Beat.WAIT
    return Beat.PING if now - last_seen >= interval else Beat.WAIT


def missed_heartbeat(peer: str | None) -> None:
    """Log a subscriber dropped for not answering the heartbeat (at DEBUG: a vanished laptop is routine)."""
    log.debug("websocket peer %s missed a heartbeat; closing", peer)


def ws_failed(state: RelayState, peer: str | None, code: int, reason: str) -> None:
    """Count and log a subscriber's connection closed for a protocol error (``code``, ``reason``)."""
    state.stats.rejected += 1
    if code == CLOSE_TOO_BIG:
        log.warning(
            "websocket message from %s larger than max_ws_message_bytes=%d; closed 1009",
            peer,
            state.config.max_ws_message_bytes,
        )
    else:
        log.warning("websocket error from %s: %s; closing %d", peer, reason, code)
