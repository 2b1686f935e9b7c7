"""``ClientStatus``: what the client is doing, readable and awaitable from any thread.

The client updates it from its event loop; operators, health checks and tests read it from anywhere and
block on :meth:`ClientStatus.wait_for` (a ``threading.Condition``), e.g.::

    client.status.wait_for(lambda s: s.hellos >= 1, timeout=5)   # connected to a protocol-2 relay
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ClientStatus"]

_COUNTERS = (
    "connections",  # successful WebSocket handshakes
    "hellos",  # protocol-2 hello frames received
    "failures",  # failed handshakes and dropped connections
    "auth_failures",  # handshakes refused with HTTP 401/403
    "received",  # envelopes received (any app)
    "replies",  # replies sent (WebSocket or HTTP POST)
    "acks",  # acks sent
    "nacks",  # nacks sent (a failed handler or a rejected request, protocol 2)
    "rejected",  # envelopes refused by the bot (bad signature, token, body)
    "unknown_app",  # envelopes for an app id no bot here serves
    "server_errors",  # relay ``error`` frames (refused reply/ack)
    "dropped",  # replies/acks that could not be delivered
)


class ClientStatus:
    """Counters and connection state of one client. All attributes are read-only to users.

    Attributes:
        connected: a WebSocket to the relay is open.
        protocol: 2 after a ``hello``, 1 after an envelope arrived first (original relay), else ``None``.
        last_error: a one-line description of the last connection failure (no secrets).
        connections, hellos, failures, auth_failures, received, replies, acks, nacks, rejected, unknown_app,
        server_errors, dropped: monotonically increasing counters.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.connected = False
        self.protocol: int | None = None
        self.last_error = ""
        self.connections = 0
        self.hellos = 0
        self.failures = 0
        self.auth_failures = 0
        self.received = 0
        self.replies = 0
        self.acks = 0
        self.nacks = 0
        self.rejected = 0
        self.unknown_app = 0
        self.server_errors = 0
        self.dropped = 0
        #: ``time.monotonic()`` of each counter's last increment (when it happened, not when a waiter woke)
        self.changed_at: dict[str, float] = {}

    def update(self, **changes: Any) -> None:
        """Set attributes and wake the waiters (client side only)."""
        with self._cond:
            for name, value in changes.items():
                setattr(self, name, value)
            self._cond.notify_all()

    def incr(self, *names: str) -> None:
        """Add one to each counter in ``names`` and wake the waiters (client side only)."""
        now = time.monotonic()
        with self._cond:
            for name in names:
                setattr(self, name, getattr(self, name) + 1)
                self.changed_at[name] = now
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[ClientStatus], bool], timeout: float | None = None) -> bool:
        """Block until ``predicate(self)`` is true; returns False on timeout. Do not call it on the
        client's own event loop (use ``await asyncio.to_thread(status.wait_for, ...)`` there)."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of every field, for logs and health endpoints."""
        with self._cond:
            out: dict[str, Any] = {name: getattr(self, name) for name in _COUNTERS}
            out.update(connected=self.connected, protocol=self.protocol, last_error=self.last_error)
            return out

    def __repr__(self) -> str:
        return f"ClientStatus({self.snapshot()!r})"
