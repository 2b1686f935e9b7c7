"""A local Feishu: push events and callbacks exactly as Feishu does, judge the answers as Feishu does.

* :class:`SimApp` - one app's credentials (``SimApp.random()``).
* :mod:`wslarkbot.sim.payloads` - the payloads, in the shapes of the official samples.
* :class:`FeishuSimulator` (asyncio) and :class:`SyncFeishuSimulator` - pushing, judging, retries.
* :class:`FakeOpenAPI` - Feishu's ``/open-apis`` on 127.0.0.1, in its own thread.
* :mod:`wslarkbot.sim.pytest_plugin` - fixtures (``pytest_plugins = ["wslarkbot.sim.pytest_plugin"]``).

Not modelled: ordered-event queues, per-app request concurrency limits, source IPs, the Feishu console,
and the 200830 "2.0 card replaced by a 1.0 card" check (see the simulator's docs).
"""

from __future__ import annotations

from . import payloads
from .app import SimApp, new_id
from .feishu import FEISHU_RETRY_INTERVALS, CardTokenIssuer, FeishuSimulator, SyncFeishuSimulator
from .openapi_server import FakeOpenAPI  # needs aiohttp (the "relay" extra)
from .protocol import (
    CHALLENGE_ERROR,
    ERR_BAD_BODY,
    ERR_BAD_CARD,
    ERR_HTTP_STATUS,
    ERR_TIMEOUT,
    CallbackResult,
    ChallengeResult,
    DeliveryResult,
    SentRequest,
)

__all__ = [
    "CHALLENGE_ERROR",
    "ERR_BAD_BODY",
    "ERR_BAD_CARD",
    "ERR_HTTP_STATUS",
    "ERR_TIMEOUT",
    "FEISHU_RETRY_INTERVALS",
    "CallbackResult",
    "CardTokenIssuer",
    "ChallengeResult",
    "DeliveryResult",
    "FakeOpenAPI",
    "FeishuSimulator",
    "SentRequest",
    "SimApp",
    "SyncFeishuSimulator",
    "new_id",
    "payloads",
]
