"""Relay counters, served as JSON by ``GET /status`` (in the spirit of nchan_stub_status)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["RelayStats"]


@dataclass
class RelayStats:
    """Monotonic counters since start. ``snapshot`` adds the hub's gauges and the uptime.

    Attributes:
        published: webhook requests published to a channel (whether or not anyone received them).
        delivered: envelope frames handed to subscribers (one per subscriber per request).
        undelivered: published requests nobody received (answered 503).
        buffered: events answered 200 ``{"msg":"buffered"}``: kept in a channel buffer, not acked in time.
        replies: answers used as the HTTP response (WebSocket ``reply`` or ``POST /sub/<id>``).
        acks: protocol-2 ``ack`` messages that answered a request.
        nacks: protocol-2 ``nack`` messages that answered a request (answered 500: the bot did not handle it).
        timeouts: waiting requests answered 504.
        rejected: requests or messages refused for bad input or a limit (4xx/503).
        subscribes, unsubscribes: WebSocket subscriptions opened and closed.
    """

    published: int = 0
    delivered: int = 0
    undelivered: int = 0
    buffered: int = 0
    replies: int = 0
    acks: int = 0
    nacks: int = 0
    timeouts: int = 0
    rejected: int = 0
    subscribes: int = 0
    unsubscribes: int = 0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    started: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if not self.started:
            self.started = self.clock()

    def snapshot(self, gauges: Mapping[str, int]) -> dict[str, Any]:
        """Counters + ``gauges`` (channels, subscribers, pending_replies) + ``uptime`` seconds."""
        out: dict[str, Any] = {k: v for k, v in asdict(self).items() if k not in ("clock", "started")}
        out.update(gauges)
        out["uptime"] = round(self.clock() - self.started, 3)
        return out
