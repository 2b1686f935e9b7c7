"""Shared setup of the end-to-end tests (``test_e2e_client.py``, ``test_e2e_nchan.py``): bots, simulators,
the fake OpenAPI.

``tests/`` is on ``sys.path``; import the fixtures under their function names to register them (pytest
finds a fixture by the name it is registered under, here the same as the test files used before)::

    from e2e_helpers import (  # noqa: F401  (the *_fixture imports register `openapi`, `sims`, `close_bots`)
        close_bots_fixture,
        make_bot,
        make_sim,
        openapi_fixture,
        sims_fixture,
    )

``close_bots`` is autouse: a test module that imports it closes, after each test, every bot
:func:`make_bot` made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import pytest

from wslarkbot.bot import Bot
from wslarkbot.client import backoff
from wslarkbot.sim.app import SimApp
from wslarkbot.sim.feishu import FeishuSimulator
from wslarkbot.sim.openapi_server import FakeOpenAPI

__all__ = [
    "FAST_RETRY",
    "WAIT",
    "close_bots_fixture",
    "make_bot",
    "make_sim",
    "openapi_fixture",
    "server_of",
    "sims_fixture",
]

WAIT = 5.0
FAST_RETRY: dict[str, Any] = {"reconnect_delays": lambda: backoff(0.05, 0.5)}


class _HasPort(Protocol):
    @property
    def port(self) -> int: ...


@pytest.fixture(name="openapi")
def openapi_fixture() -> Iterator[FakeOpenAPI]:
    with FakeOpenAPI() as api:
        yield api


@pytest.fixture(name="sims")
async def sims_fixture() -> AsyncIterator[list[FeishuSimulator]]:
    made: list[FeishuSimulator] = []
    yield made
    for sim in made:
        await sim.aclose()


def make_sim(sims: list[FeishuSimulator], app: SimApp, url: str) -> FeishuSimulator:
    # Retries scaled to ~nothing: a test that expects a refusal must not wait for Feishu's 6 h retry.
    sim = FeishuSimulator(app, event_url=url, time_scale=1e-5)
    sims.append(sim)
    return sim


_made_bots: list[Bot] = []


@pytest.fixture(name="close_bots", autouse=True)
async def close_bots_fixture() -> AsyncIterator[None]:
    """Bots hold OpenAPI HTTP clients: close them after each test."""
    yield
    while _made_bots:
        await _made_bots.pop().aclose()


def make_bot(app: SimApp, openapi: FakeOpenAPI | None = None) -> Bot:
    host = openapi.url if openapi is not None else None  # None: $WSLARKBOT_FEISHU_HOST (conftest.py)
    if openapi is not None:
        openapi.add_app(app.app_id, app.app_secret)
    bot = Bot(app.app_id, app.app_secret, app.verification_token, app.encrypt_key, host=host)
    _made_bots.append(bot)
    return bot


def server_of(relay: _HasPort) -> str:
    """``127.0.0.1:<port>`` of a running relay (ours or nchan), what ``AsyncClient(server=...)`` takes."""
    return f"127.0.0.1:{relay.port}"
