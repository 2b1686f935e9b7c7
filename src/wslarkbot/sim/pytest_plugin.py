"""pytest fixtures for testing bots and the relay against the Feishu simulator.

Register in ``tests/conftest.py`` (or a project's own)::

    pytest_plugins = ["wslarkbot.sim.pytest_plugin"]

Fixtures:
    ``sim_app``              a random :class:`SimApp` with an Encrypt Key.
    ``sim_app_plain``        a random :class:`SimApp` without one.
    ``fake_openapi``         a running ``FakeOpenAPI`` with ``sim_app`` registered, stopped after the test.
    ``feishu_sim_factory``   ``make(url, **kwargs) -> FeishuSimulator`` (asyncio), closed after the test;
                             ``time_scale`` defaults to :data:`TEST_TIME_SCALE` (15 s -> 15 ms).
    ``sync_feishu_sim_factory``  the same for blocking tests (:class:`SyncFeishuSimulator`).
    ``http_peer``            ``await http_peer(handler) -> url``: an aiohttp server on 127.0.0.1:0 that
                             answers every POST with ``handler`` (a scripted webhook receiver).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from .app import SimApp
from .feishu import FeishuSimulator, SyncFeishuSimulator
from .openapi_server import FakeOpenAPI

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "TEST_TIME_SCALE",
    "fake_openapi",
    "feishu_sim_factory",
    "http_peer",
    "sim_app",
    "sim_app_plain",
    "sync_feishu_sim_factory",
]

#: Retry intervals are multiplied by this in tests: 15 s, 5 min, 1 h, 6 h -> 15 ms, 0.3 s, 3.6 s, 21.6 s.
TEST_TIME_SCALE = 0.001

SimFactory = Callable[..., FeishuSimulator]
Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


@pytest.fixture
def sim_app() -> SimApp:
    """A random app with an Encrypt Key: encrypted, signed bodies."""
    return SimApp.random()


@pytest.fixture
def sim_app_plain() -> SimApp:
    """A random app without an Encrypt Key: plaintext, unsigned bodies."""
    return SimApp.random(encrypt=False)


@pytest.fixture
def fake_openapi(sim_app: SimApp) -> Iterator[FakeOpenAPI]:
    """A running ``FakeOpenAPI`` (``api.url``) that knows ``sim_app``'s credentials and tenant.

    Pass it to ``feishu_sim_factory(..., openapi=fake_openapi)`` so card callbacks carry card tokens it
    accepts for delayed updates.
    """
    with FakeOpenAPI() as api:
        api.add_app(sim_app.app_id, sim_app.app_secret, tenant_key=sim_app.tenant_key)
        yield api


@pytest_asyncio.fixture
async def feishu_sim_factory(sim_app: SimApp) -> AsyncIterator[SimFactory]:
    """``make(url=None, *, app=sim_app, **kwargs)``: a FeishuSimulator pushing to ``url``."""
    made: list[FeishuSimulator] = []

    def make(url: str | None = None, *, app: SimApp | None = None, **kwargs: Any) -> FeishuSimulator:
        kwargs.setdefault("time_scale", TEST_TIME_SCALE)
        kwargs.setdefault("event_url", url)
        sim = FeishuSimulator(app or sim_app, **kwargs)
        made.append(sim)
        return sim

    yield make
    for sim in made:
        await sim.aclose()


@pytest.fixture
def sync_feishu_sim_factory(sim_app: SimApp) -> Iterator[Callable[..., SyncFeishuSimulator]]:
    """The blocking twin of ``feishu_sim_factory``."""
    made: list[SyncFeishuSimulator] = []

    def make(url: str | None = None, *, app: SimApp | None = None, **kwargs: Any) -> SyncFeishuSimulator:
        kwargs.setdefault("time_scale", TEST_TIME_SCALE)
        kwargs.setdefault("event_url", url)
        sim = SyncFeishuSimulator(app or sim_app, **kwargs)
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.close()


@pytest_asyncio.fixture
async def http_peer() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """``await http_peer(handler, path="/webhook") -> url`` on 127.0.0.1:0, stopped after the test."""
    from aiohttp import web

    runners: list[web.AppRunner] = []

    async def start(handler: Handler, path: str = "/webhook") -> str:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            return await handler(request)  # any awaitable callable, e.g. a recorder object

        app = web.Application()
        app.router.add_route("*", path, endpoint)
        # A short shutdown grace: a peer that deliberately never answers must not stall the teardown.
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}{path}"

    yield start
    for runner in runners:
        await runner.cleanup()
