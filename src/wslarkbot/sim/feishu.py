"""FeishuSimulator: push requests to a URL exactly as Feishu does, and judge the answers as Feishu does.

Defaults are Feishu's documented limits (protocol.md §4-§6): the challenge must be echoed within 1 s; an
event must get HTTP 200 within 3 s, else it is retried after 15 s, 5 min, 1 h and 6 h (same
``event_id``/``uuid``) and then dropped; a callback must get a valid HTTP 200 JSON answer within 3 s and
is never retried. Tests shorten them with ``time_scale`` and the ``*_timeout`` arguments.

Example::

    async with FeishuSimulator(SimApp.random(), event_url=url, time_scale=0.001) as sim:
        assert (await sim.url_verification()).ok
        result = await sim.send_text_message("你好")
        assert result.delivered and result.retries == 0
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import httpx

from .._background import BackgroundLoop
from ..exceptions import ConfigurationError
from . import payloads
from .app import SimApp, new_id
from .protocol import (
    ERR_TIMEOUT,
    CallbackResult,
    ChallengeResult,
    DeliveryResult,
    RequestKind,
    SentRequest,
    build_request,
    judge_callback,
    judge_challenge,
)

__all__ = ["FEISHU_RETRY_INTERVALS", "CardTokenIssuer", "FeishuSimulator", "SyncFeishuSimulator"]

log = logging.getLogger("wslarkbot.sim")

#: Seconds between an event's failed push and its next retry (protocol.md §5, current docs).
FEISHU_RETRY_INTERVALS: tuple[float, ...] = (15, 300, 3600, 21600)

Target = Literal["event", "callback", "card"]


class CardTokenIssuer(Protocol):
    """Where card-update tokens come from, e.g. ``FakeOpenAPI`` (so delayed updates can be checked)."""

    def issue_card_token(self, app_id: str | None = None, message_id: str | None = None) -> str: ...


def new_http_client(*, verify: Any = True) -> httpx.AsyncClient:
    """The HTTP client Feishu's requests go out with (``verify``: as httpx takes it, e.g. an SSLContext)."""
    client = httpx.AsyncClient(timeout=None, follow_redirects=False, trust_env=False, verify=verify)
    # Go's net/http sends neither of these; keep the request's headers to Feishu's.
    for name in ("Accept", "Connection"):
        client.headers.pop(name, None)
    return client


class FeishuSimulator:
    """Feishu's side of the webhook protocol for one app (asyncio).

    Args:
        app: the simulated app (credentials, tenant).
        event_url: the 事件订阅 request URL.
        callback_url: the 回调配置 URL (``card.action.trigger``, ``url.preview.get``); defaults to event_url.
        card_url: the legacy 消息卡片请求网址; defaults to callback_url, then event_url.
        retry_intervals: seconds before each retry of a failed event (Feishu: 15 s, 5 min, 1 h, 6 h).
        time_scale: multiplies ``retry_intervals`` (e.g. ``0.001``); timeouts are not scaled.
        sign_without_encrypt_key: send ``X-Lark-*`` signature headers even when the app has no Encrypt Key.
        challenge_timeout, event_timeout, callback_timeout: Feishu's 1 s / 3 s / 3 s deadlines.
        http_client: an ``httpx.AsyncClient`` to send with (it must not follow redirects); the simulator
            owns and closes the one it creates otherwise.
        clock: source of ``X-Lark-Request-Timestamp`` and ``SentRequest.sent_at``.
        openapi: a :class:`CardTokenIssuer` (``FakeOpenAPI``): card callbacks then carry tokens it
            accepts on ``/interactive/v1/card/update`` (30 min, 2 uses); random ``c-...`` tokens otherwise.

    Everything sent is appended to :attr:`sent` (one :class:`SentRequest` per HTTP attempt), and every
    finished event delivery to :attr:`results`.
    """

    def __init__(
        self,
        app: SimApp,
        *,
        event_url: str | None = None,
        callback_url: str | None = None,
        card_url: str | None = None,
        retry_intervals: Sequence[float] = FEISHU_RETRY_INTERVALS,
        time_scale: float = 1.0,
        sign_without_encrypt_key: bool = False,
        challenge_timeout: float = 1.0,
        event_timeout: float = 3.0,
        callback_timeout: float = 3.0,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        openapi: CardTokenIssuer | None = None,
    ) -> None:
        if time_scale < 0 or any(i < 0 for i in retry_intervals):
            raise ConfigurationError("time_scale and retry_intervals must not be negative")
        self.app = app
        self.event_url = event_url
        self.callback_url = callback_url or event_url
        self.card_url = card_url or self.callback_url
        self.retry_intervals = tuple(retry_intervals)
        self.time_scale = time_scale
        self.sign_without_encrypt_key = sign_without_encrypt_key
        self.challenge_timeout = challenge_timeout
        self.event_timeout = event_timeout
        self.callback_timeout = callback_timeout
        self._client = http_client or new_http_client()
        self._owns_client = http_client is None
        self._clock = clock
        self.openapi = openapi
        self._pending: set[asyncio.Task[DeliveryResult]] = set()
        self.sent: list[SentRequest] = []
        self.results: list[DeliveryResult] = []

    async def __aenter__(self) -> FeishuSimulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel deliveries still waiting for a retry, and close the HTTP client if we made it."""
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        if self._owns_client:
            await self._client.aclose()

    # -- one HTTP attempt -------------------------------------------------------------------------

    def _url(self, target: Target, url: str | None) -> str:
        configured = {"event": self.event_url, "callback": self.callback_url, "card": self.card_url}
        chosen = url or configured[target]
        if not chosen:
            raise ConfigurationError(f"no URL configured for {target} requests")
        return chosen

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        response = await self._client.post(url, content=body, headers=headers, follow_redirects=False)
        return response.status_code, response.content

    async def _attempt(
        self, kind: RequestKind, url: str, payload: Mapping[str, Any], attempt: int, timeout: float
    ) -> SentRequest:
        request = build_request(
            self.app,
            payload,
            kind=kind,
            timestamp=str(int(self._clock())),
            nonce=secrets.token_hex(16),
            request_id=str(uuid.uuid4()),
            sign_without_encrypt_key=self.sign_without_encrypt_key,
        )
        key = payloads.event_key(payload)
        record = SentRequest(kind, url, key, attempt, request.headers, request.body, payload, self._clock())
        self.sent.append(record)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            record.status, record.response_body = await asyncio.wait_for(
                self._post(url, request.headers, request.body), timeout
            )
        except asyncio.TimeoutError:
            record.error = "timeout"
        except (httpx.HTTPError, OSError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        record.elapsed = loop.time() - start
        log.debug("%s %s attempt %d -> %s", kind, key, attempt, record.status or record.error)
        return record

    # -- url_verification -------------------------------------------------------------------------

    async def url_verification(
        self, url: str | None = None, *, target: Target = "event", challenge: str | None = None
    ) -> ChallengeResult:
        """Save a request URL in the console: send the challenge, require it back within 1 s.

        ``target="card"`` verifies the legacy card URL (plain body); otherwise the body is encrypted when
        the app has an Encrypt Key. No signature headers either way (protocol.md §1, §4).
        """
        payload = payloads.url_verification(self.app, challenge)
        kind: RequestKind = "legacy_card_verification" if target == "card" else "url_verification"
        record = await self._attempt(kind, self._url(target, url), payload, 0, self.challenge_timeout)
        error = judge_challenge(payload["challenge"], record.status, record.response_body)
        return ChallengeResult(
            ok=error is None,
            status=record.status,
            elapsed=record.elapsed or 0.0,
            body=record.response_body,
            error=error,
            challenge=payload["challenge"],
        )

    # -- events -----------------------------------------------------------------------------------

    async def _deliver(self, url: str, payload: Mapping[str, Any]) -> DeliveryResult:
        result = DeliveryResult(payloads.event_key(payload))
        for attempt in range(len(self.retry_intervals) + 1):
            if attempt:
                await asyncio.sleep(self.retry_intervals[attempt - 1] * self.time_scale)
            record = await self._attempt("event", url, payload, attempt, self.event_timeout)
            result.attempts.append(record)
            if record.status == 200:  # the body is ignored (protocol.md §5)
                result.delivered = True
                break
        self.results.append(result)
        return result

    async def send_event(
        self,
        payload: Mapping[str, Any],
        *,
        url: str | None = None,
        duplicate: bool = False,
        duplicate_message_new_event_id: bool = False,
    ) -> DeliveryResult:
        """Push one event (v2 or v1) and retry it until it is delivered or dropped; returns when done.

        Args:
            duplicate: after a successful delivery, push the identical event again (same event_id).
            duplicate_message_new_event_id: after success, push it again under a new event_id/uuid
                (Feishu's "dedupe by message_id, not event_id" case, protocol.md §5).
        """
        target = self._url("event", url)
        result = await self._deliver(target, payload)
        if result.delivered and duplicate:
            result.duplicates.append(await self._deliver(target, payload))
        if result.delivered and duplicate_message_new_event_id:
            result.duplicates.append(await self._deliver(target, payloads.with_new_event_id(payload)))
        return result

    def deliver_async(self, payload: Mapping[str, Any], **kwargs: Any) -> asyncio.Task[DeliveryResult]:
        """Start :meth:`send_event` in the background (Feishu pushes events concurrently)."""
        task = asyncio.ensure_future(self.send_event(payload, **kwargs))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until every background delivery (retries included) has finished."""
        while self._pending:
            await asyncio.wait_for(asyncio.gather(*self._pending, return_exceptions=True), timeout)

    async def send_text_message(
        self,
        text: str,
        *,
        url: str | None = None,
        duplicate: bool = False,
        duplicate_message_new_event_id: bool = False,
        **message: Any,
    ) -> DeliveryResult:
        """Push an ``im.message.receive_v1`` text message; ``message``: see :func:`payloads.text_message`."""
        payload = payloads.text_message(self.app, text, **message)
        return await self.send_event(
            payload,
            url=url,
            duplicate=duplicate,
            duplicate_message_new_event_id=duplicate_message_new_event_id,
        )

    async def send_v1_event(self, event: Mapping[str, Any], *, url: str | None = None) -> DeliveryResult:
        """Push a v1.0 event (``event["type"]`` required), e.g. ``{"type": "p2p_chat_create", ...}``."""
        return await self.send_event(payloads.event_v1(self.app, event), url=url)

    async def send_app_ticket(self, ticket: str | None = None, *, url: str | None = None) -> DeliveryResult:
        """Push the v1 ``app_ticket`` event (``ticket``: what the fake OpenAPI issued, default a new id)."""
        return await self.send_event(payloads.app_ticket(self.app, ticket), url=url)

    # -- callbacks --------------------------------------------------------------------------------

    async def send_callback(
        self, payload: Mapping[str, Any], *, url: str | None = None, legacy: bool = False
    ) -> CallbackResult:
        """Send one callback (never retried) and judge the answer (protocol.md §6)."""
        kind: RequestKind = "legacy_card" if legacy else "callback"
        target = self._url("card" if legacy else "callback", url)
        record = await self._attempt(kind, target, payload, 0, self.callback_timeout)
        elapsed = record.elapsed or 0.0
        if record.error == "timeout":
            return CallbackResult(False, None, None, ERR_TIMEOUT, elapsed, "no answer in time", record)
        if record.status is None:
            # Connection refused/reset: Feishu shows the same "request failed" as for no answer in time.
            return CallbackResult(False, None, None, ERR_TIMEOUT, elapsed, record.error, record)
        code, response, reason = judge_callback(record.status, record.response_body, legacy=legacy)
        return CallbackResult(code is None, record.status, response, code, elapsed, reason, record)

    def _card_token(self, action: dict[str, Any]) -> None:
        if self.openapi is not None and "token" not in action:
            action.setdefault("open_message_id", new_id("om_"))
            action["token"] = self.openapi.issue_card_token(self.app.app_id, action["open_message_id"])

    async def send_card_action(
        self, value: Mapping[str, Any] | None = None, *, url: str | None = None, **action: Any
    ) -> CallbackResult:
        """Send a ``card.action.trigger`` callback; ``action`` goes to :func:`payloads.card_action`."""
        self._card_token(action)
        return await self.send_callback(payloads.card_action(self.app, value, **action), url=url)

    async def send_legacy_card_action(
        self, value: Mapping[str, Any] | None = None, *, url: str | None = None, **action: Any
    ) -> CallbackResult:
        """Send a legacy ``card.action.trigger_v1`` to the card URL: plain, sha1-signed (protocol.md §6b)."""
        self._card_token(action)
        payload = payloads.legacy_card_action(self.app, value, **action)
        return await self.send_callback(payload, url=url, legacy=True)

    async def send_url_preview(self, link: str, *, url: str | None = None, **context: Any) -> CallbackResult:
        """Send a ``url.preview.get`` callback for ``link``."""
        return await self.send_callback(payloads.url_preview(self.app, link, **context), url=url)


class SyncFeishuSimulator:
    """A blocking front: the same methods as :class:`FeishuSimulator`, run on a private loop thread.

    Example::

        with SyncFeishuSimulator(app, event_url=url) as sim:
            assert sim.url_verification().ok
    """

    def __init__(self, app: SimApp, **kwargs: Any) -> None:
        self._bg = BackgroundLoop(name="wslarkbot-feishu-sim")
        self.sim = FeishuSimulator(app, **kwargs)

    def __enter__(self) -> SyncFeishuSimulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def sent(self) -> list[SentRequest]:
        return self.sim.sent

    def url_verification(self, *args: Any, **kwargs: Any) -> ChallengeResult:
        return self._bg.run(self.sim.url_verification(*args, **kwargs))

    def send_event(self, *args: Any, **kwargs: Any) -> DeliveryResult:
        return self._bg.run(self.sim.send_event(*args, **kwargs))

    def send_text_message(self, *args: Any, **kwargs: Any) -> DeliveryResult:
        return self._bg.run(self.sim.send_text_message(*args, **kwargs))

    def send_v1_event(self, *args: Any, **kwargs: Any) -> DeliveryResult:
        return self._bg.run(self.sim.send_v1_event(*args, **kwargs))

    def send_card_action(self, *args: Any, **kwargs: Any) -> CallbackResult:
        return self._bg.run(self.sim.send_card_action(*args, **kwargs))

    def send_legacy_card_action(self, *args: Any, **kwargs: Any) -> CallbackResult:
        return self._bg.run(self.sim.send_legacy_card_action(*args, **kwargs))

    def send_url_preview(self, *args: Any, **kwargs: Any) -> CallbackResult:
        return self._bg.run(self.sim.send_url_preview(*args, **kwargs))

    def close(self) -> None:
        """Close the simulator and stop its loop thread."""
        if self._bg.running:
            self._bg.run(self.sim.aclose())
            self._bg.stop()
