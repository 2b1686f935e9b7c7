"""Shared helpers of the delivery tests (test_delivery_relay.py, test_delivery_redis.py): numbered events, a
protocol-2 ack, and "nothing more arrived" without sleeping.

``tests/`` is on ``sys.path``: ``from delivery_helpers import ack, assert_nothing_more, event``.
"""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.client import ClientConnection

from wslarkbot.relay.testing import recv_text

__all__ = ["ack", "assert_nothing_more", "event"]


def event(n: int) -> dict[str, Any]:
    """Event ``n``: an ``im.message.receive_v1`` with ``event_id`` ``ev-<n>`` and event ``{"n": n}``."""
    header = {"event_type": "im.message.receive_v1", "event_id": f"ev-{n}"}
    return {"schema": "2.0", "header": header, "event": {"n": n}}


async def ack(ws: ClientConnection, env: dict[str, Any]) -> None:
    """Acknowledge the envelope ``env`` on the protocol-2 socket ``ws``."""
    await ws.send(json.dumps({"type": "ack", "request_id": env["headers"]["x-request-id"]}))


async def assert_nothing_more(ws: ClientConnection) -> None:
    """No frame is queued before the answer to a PING sent now (no envelope, no error frame)."""
    await ws.send("PING")
    assert await recv_text(ws) == "PONG"
