"""Serve a :class:`~wslarkbot.bot.Bot` directly over HTTP, for bots that do have a public URL.

:func:`handle_webhook` is the whole HTTP mapping, free of any web framework; :func:`create_webhook_app`
wraps it in an aiohttp application (aiohttp is the optional ``relay`` extra, imported only there)::

    app = create_webhook_app(bot)                  # POST /webhook/<app_id>
    aiohttp.web.run_app(app, port=8080)

Status mapping (protocol.md §3 "How the wheel handles ...", §5, §6a):

* challenge, callback response -> 200 with that JSON; an event -> 200 ``{"msg": "success"}``, also when
  its handler raised (logged): a retry would deliver the same event to the same bug up to 4 times over 7 h;
* a callback whose handler raised -> 500 ``{"msg": "handler error"}`` (Feishu shows an error toast);
* a re-delivery of an event (or callback) whose first delivery is still running (``dedup``,
  ``DispatchResult.no_answer``) -> 503 ``{"msg": "in progress"}`` with ``Retry-After``: Feishu retries
  later, and then gets 200 if the first run succeeded (or a run if it failed or its process died);
* body not UTF-8 JSON, malformed payload, bad ciphertext -> 400; bad signature or token -> 401;
* anything unexpected -> 500 ``{"msg": "internal error"}`` (the exception is logged, never echoed).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .exceptions import ConfigurationError, RequestRejected, SignatureError, TokenMismatchError
from .wire import Envelope, filter_headers

if TYPE_CHECKING:
    from aiohttp import web

    from .bot import Bot

__all__ = ["WebhookResponse", "create_webhook_app", "handle_webhook"]

logger = logging.getLogger("wslarkbot.webhook")

CONTENT_TYPE = "application/json; charset=utf-8"
#: ``Retry-After`` (seconds) of a 503 "in progress" answer (Feishu keeps its own schedule anyway).
IN_PROGRESS_RETRY_AFTER = 15


@dataclass(frozen=True)
class WebhookResponse:
    """An HTTP answer: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def body_bytes(self) -> bytes:
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _rejection(exc: RequestRejected) -> WebhookResponse:
    status = 401 if isinstance(exc, (SignatureError, TokenMismatchError)) else 400
    # RequestRejected messages are ours and carry no payload or secret (see Bot.parse).
    return WebhookResponse(status, {"msg": str(exc) or type(exc).__name__})


async def handle_webhook(
    bot: Bot,
    headers: Mapping[str, str],
    raw_body: bytes,
    *,
    executor: Executor | None = None,
) -> WebhookResponse:
    """Answer one Feishu webhook request with ``bot``.

    Args:
        bot: the bot the request's URL belongs to.
        headers: the HTTP request headers (any case).
        raw_body: the exact body bytes (signatures are over these).
        executor: where ``def`` handlers run (None: the loop's default executor).

    Returns:
        The status and JSON body to send (mapping in the module docstring). Never raises for a bad request.
    """
    hdrs = filter_headers(headers)
    hdrs.setdefault("x-request-id", uuid.uuid4().hex)
    hdrs["x-app-id"] = bot.app_id
    try:
        text = raw_body.decode("utf-8")
        body = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return WebhookResponse(400, {"msg": "body is not UTF-8 JSON"})
    envelope = Envelope(headers=hdrs, body=body, raw_body=text)
    try:
        result = await bot.adispatch(envelope, executor=executor)
    except RequestRejected as exc:
        logger.info("request %s rejected: %s", hdrs["x-request-id"], type(exc).__name__)
        return _rejection(exc)
    except Exception:
        logger.exception("request %s: unexpected error", hdrs["x-request-id"])
        return WebhookResponse(500, {"msg": "internal error"})
    if result.no_answer:  # another delivery is running it: not a 2xx, so that Feishu tries again later
        return WebhookResponse(503, {"msg": "in progress"}, {"Retry-After": str(IN_PROGRESS_RETRY_AFTER)})
    if result.request.expects_reply:
        if result.response is None:
            return WebhookResponse(500, {"msg": "handler error"})
        return WebhookResponse(200, result.response)
    return WebhookResponse(200, {"msg": "success"})


def create_webhook_app(
    *bots: Bot, path: str = "/webhook/{app_id}", executor: Executor | None = None
) -> web.Application:
    """An aiohttp application that serves ``bots`` on ``POST path``.

    Args:
        bots: one or more bots, told apart by the ``{app_id}`` part of ``path``.
        path: the route; without ``{app_id}`` it serves exactly one bot.
        executor: where ``def`` handlers run.

    Raises:
        ConfigurationError: no bot, two bots with one app_id, or several bots and no ``{app_id}`` in path.
    """
    from aiohttp import web

    if not bots:
        raise ConfigurationError("create_webhook_app needs at least one Bot")
    by_id: dict[str, Bot] = {}
    for bot in bots:
        if bot.app_id in by_id:
            raise ConfigurationError(f"two bots with app_id {bot.app_id!r}")
        by_id[bot.app_id] = bot
    routed = "{app_id}" in path
    if not routed and len(bots) > 1:
        raise ConfigurationError("several bots need '{app_id}' in the path")

    async def webhook(request: web.Request) -> web.Response:
        bot = by_id.get(request.match_info["app_id"]) if routed else bots[0]
        if bot is None:
            answer = WebhookResponse(404, {"msg": "unknown app"})
        else:
            answer = await handle_webhook(bot, request.headers, await request.read(), executor=executor)
        return web.Response(
            status=answer.status,
            body=answer.body_bytes(),
            content_type="application/json",
            charset="utf-8",
            headers=answer.headers,
        )

    app = web.Application()
    app.router.add_post(path, webhook)
    return app
