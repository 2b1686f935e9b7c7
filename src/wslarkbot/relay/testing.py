"""Small helpers for tests that talk to a real relay (ours or nchan) over real sockets. No mocks.

Example::

    async with run_relay(test_config()) as relay, websockets.connect(relay.ws_url("cli_a")) as ws:
        hello = await recv_json(ws)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from .config import RelayConfig

__all__ = ["SIGNED", "recv_json", "recv_text", "test_config"]

#: Headers that make a webhook an event (not a url_verification), as Feishu sends them (protocol.md §1).
SIGNED = {
    "X-Lark-Request-Timestamp": "1700000000",
    "X-Lark-Request-Nonce": "nonce-abc",
    "X-Lark-Signature": "0" * 64,
}


class _Receiver(Protocol):
    async def recv(self) -> str | bytes: ...


def test_config(**changes: Any) -> RelayConfig:
    """Loopback, port 0, short waits (0.5 s), fast heartbeats; ``changes`` override."""
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "challenge_timeout": 0.5,
        "callback_timeout": 0.5,
        "ack_timeout": 0.5,
        "heartbeat": 5.0,
        "shutdown_timeout": 1.0,
    }
    base.update(changes)
    return RelayConfig(**base)


test_config.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


async def recv_text(ws: _Receiver, timeout: float = 3.0) -> str:
    """The next frame as text, or ``asyncio.TimeoutError``."""
    data = await asyncio.wait_for(ws.recv(), timeout)
    return data.decode() if isinstance(data, bytes) else data


async def recv_json(ws: _Receiver, timeout: float = 3.0) -> Any:
    """The next frame decoded as JSON."""
    return json.loads(await recv_text(ws, timeout))
