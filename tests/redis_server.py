"""Shared setup of the tests that run relay nodes on a real redis-server (test_relay_redis.py,
test_delivery_redis.py): the skip marks, a ``redis_server`` fixture, the :class:`Node` protocol.

``tests/`` is on ``sys.path``; import the fixture under its function name to register it::

    from redis_server import REDIS_MARKS, Node, redis_server_fixture  # noqa: F401  (registers `redis_server`)

    pytestmark = [*REDIS_MARKS, pytest.mark.timeout(90)]
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from system_programs import mark
from wslarkbot.relay.testing import RedisServer

__all__ = ["REDIS_MARKS", "Node", "redis_server_fixture"]

#: Skip without redis-server; the cluster tests SIGKILL a node (POSIX signals).
REDIS_MARKS = [
    mark("redis-server"),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]


class Node(Protocol):
    """A relay node, in this process (``RunningRelay``) or a subprocess (``ServeProcess``)."""

    @property
    def url(self) -> str: ...

    def ws_url(self, channels: str, proto: int | None = 2) -> str: ...


@pytest.fixture(name="redis_server")
async def redis_server_fixture(tmp_path: pathlib.Path) -> AsyncIterator[RedisServer]:
    """A throwaway redis-server for one test (free port, no persistence), stopped at the end."""
    server = await RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        await server.stop()
