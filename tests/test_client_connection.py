"""AsyncClient connection handling against small real servers: heartbeat, giving up, prompt stop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import ServerConnection, serve

from wslarkbot import wire
from wslarkbot.bot import Bot
from wslarkbot.client import AsyncClient, ReconnectGaveUp, RelayAuthError
from wslarkbot.exceptions import ConfigurationError
from wslarkbot.relay.runner import run_relay
from wslarkbot.relay.testing import test_config as relay_test_config
from wslarkbot.sim.app import SimApp

WAIT = 5.0


def a_bot() -> Bot:
    app = SimApp.random()
    return Bot(app.app_id, app.app_secret, app.verification_token, app.encrypt_key)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_relay_text_ping_is_answered_with_pong() -> None:
    got: asyncio.Queue[str | bytes] = asyncio.Queue()

    async def relay(ws: ServerConnection) -> None:
        await ws.send(wire.encode_message(wire.Hello(protocol=2, channels=("cli_x",))))
        await ws.send(wire.PING)
        await got.put(await ws.recv())
        await ws.wait_closed()

    async with serve(relay, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with AsyncClient(a_bot(), server=f"127.0.0.1:{port}"):
            assert await asyncio.wait_for(got.get(), WAIT) == wire.PONG


async def test_run_raises_reconnect_gave_up_when_the_policy_runs_out(closed_port: int) -> None:
    client = AsyncClient(
        a_bot(), server=f"127.0.0.1:{closed_port}", reconnect_delays=lambda: iter([0.01, 0.01])
    )
    with pytest.raises(ReconnectGaveUp) as info:
        await asyncio.wait_for(client.run(), WAIT)
    assert isinstance(info.value.__cause__, OSError)
    assert client.status.failures == 3, "first attempt + two retries"


async def test_run_without_any_bot_raises_configuration_error_instead_of_retrying(closed_port: int) -> None:
    client = AsyncClient(server=f"127.0.0.1:{closed_port}")
    with pytest.raises(ConfigurationError, match="no bot"):
        await asyncio.wait_for(client.run(), WAIT)
    assert client.status.failures == 0


async def test_refused_org_subscription_raises_when_auth_retry_is_disabled() -> None:
    async with run_relay(relay_test_config()) as relay:  # no htpasswd: org channels are refused
        client = AsyncClient(
            a_bot(), server=f"127.0.0.1:{relay.port}", org_name="org_x", org_passwd="p", auth_retry_delay=None
        )
        with pytest.raises(RelayAuthError):
            await asyncio.wait_for(client.run(), WAIT)
    assert client.status.auth_failures == 1


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """Accepts TCP connections and never answers: a WebSocket handshake hangs until open_timeout.
    Yields the port and an event set when a connection was accepted."""
    conns: list[asyncio.StreamWriter] = []
    accepted = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        accepted.set()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1]), accepted
    for w in conns:
        w.close()
    server.close()
    await server.wait_closed()


async def test_stop_does_not_wait_for_a_hanging_handshake(silent_server: tuple[int, asyncio.Event]) -> None:
    port, accepted = silent_server
    client = AsyncClient(a_bot(), server=f"127.0.0.1:{port}", open_timeout=30)
    runner = asyncio.ensure_future(client.run())
    await asyncio.wait_for(accepted.wait(), WAIT)  # the handshake is under way
    await asyncio.wait_for(client.stop(), 2.0)
    await asyncio.wait_for(runner, 1.0)
    assert not client.running
