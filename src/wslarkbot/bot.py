"""``Bot``: verify -> decrypt -> classify -> dispatch -> response, one path for every transport.

Usage, the original project's style (a subclass overriding ``on_message``)::

    class MyBot(Bot):
        def on_message(self, data, raw_message, **kwargs):
            ...                       # data: the decrypted payload dict; raw_message: the relay envelope

or decorators on an instance (the default ``on_message`` dispatches to them)::

    bot = Bot("cli_xxx", app_secret="...", verification_token="...", encrypt_key="...")

    @bot.on_text
    def echo(event: MessageEvent) -> None:
        bot.reply_text(event.message_id, "reply: " + (event.text or ""))

    @bot.on_card_action
    async def clicked(event: CardAction | LegacyCardAction) -> dict:
        return {"toast": {"type": "success", "content": "ok"}}

Handlers take one argument, the typed event (:mod:`wslarkbot.events`); ``event.raw`` is the payload dict.
``def`` and ``async def`` handlers both work. Every handler whose registration matches runs, in
registration order. For callbacks, the first non-None return value is the response (``dict`` or an object
with ``to_dict()``); None from every handler answers ``{}`` ("no change").

The dispatch logic is written once, as a generator (:meth:`Bot._flow`) that yields "call this handler" and
"take/release this chat's lock" steps; :mod:`wslarkbot._dispatch` drives it synchronously
(:meth:`Bot.process_message`) or on asyncio (:meth:`Bot.aprocess_message`: ``async def`` handlers awaited on
the loop, ``def`` handlers in an executor). In the sync driver an ``async def`` handler runs with
:func:`asyncio.run` when no loop runs in the calling thread; inside a running loop it cannot be waited for,
and is reported as a failed handler (use ``aprocess_message``).

Chat-bot policies: messages of one chat are handled in arrival order, one at a time (``ordering="chat"``,
the default; :mod:`wslarkbot.chat`); ``dedup=True`` ignores re-pushed events (:mod:`wslarkbot.dedup`;
one re-pushed while the first delivery still runs is left unanswered, ``DispatchResult.no_answer``, so
that it comes again later); ``drop_older_than=`` skips stale messages. A message waiting for its chat
delays its own answer to the transport: behind the webhook adapter that answer is Feishu's HTTP 200, so
keep handlers short there (or use ``dedup=True``); the relay client acks at ``ack_after`` whatever the
handler does.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Hashable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from ._bot_api import BotAPIMixin
from ._dispatch import (
    Acquire,
    AsyncKeyedLocks,
    Call,
    KeyedLocks,
    Release,
    Step,
    drive_async,
    drive_sync,
    handler_name,
)
from .chat import Ordering, message_age, resolve_ordering, seconds
from .dedup import Deduplicator, claim_event, resolve_dedup
from .events import (
    CardAction,
    EventV1,
    FeishuEvent,
    FeishuRequest,
    LegacyCardAction,
    MessageEvent,
    UrlVerification,
    parse_payload,
)
from .exceptions import (
    ConfigurationError,
    MalformedRequestError,
    ProtocolError,
)
from .openapi.tickets import AppTicketStore, MemoryTicketStore
from .openapi.token import AppType
from .verify import verify_request
from .wire import Envelope

if TYPE_CHECKING:
    from .openapi import AsyncOpenAPIClient, OpenAPIClient

__all__ = ["Bot", "DispatchResult", "Handler"]

logger = logging.getLogger("wslarkbot.bot")

#: A handler: ``handler(event)``, plain or ``async``; callbacks' handlers return the response.
Handler = Callable[[Any], Any]
H = TypeVar("H", bound=Handler)

FEISHU_HOST = "https://open.feishu.cn"
#: Sets :class:`Bot`'s default OpenAPI host (Lark, a local fake) without touching the bot's code.
ENV_FEISHU_HOST = "WSLARKBOT_FEISHU_HOST"


def openapi_host(host: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The OpenAPI base URL: ``host``, else ``$WSLARKBOT_FEISHU_HOST``, else :data:`FEISHU_HOST`; a bare
    host name gets ``https://`` (``open.larksuite.com`` -> ``https://open.larksuite.com``)."""
    env = os.environ if environ is None else environ
    chosen = (host or env.get(ENV_FEISHU_HOST) or FEISHU_HOST).strip().rstrip("/")
    return chosen if "://" in chosen else f"https://{chosen}"


@dataclass(frozen=True)
class DispatchResult:
    """What one request came to.

    Attributes:
        request: the verified request.
        response: what goes back to Feishu: ``{"challenge": ...}``, a callback's response, or None (events,
            and callbacks whose handler failed).
        handler_failed: a handler raised (it was logged); a webhook answers such a callback with 500.
        skipped: why no handler ran: ``"stale"`` (``drop_older_than``), ``"duplicate"`` (``dedup``: already
            done), ``"in-progress"`` (``dedup``: another delivery of it is still running), or None.
        no_answer: the transport must answer nothing (no ack, no reply; a webhook answers 503), so that the
            event is delivered again later: set with ``skipped="in-progress"``, because acknowledging it
            would lose the event if the delivery that is running it never finishes (its process dies).
    """

    request: FeishuRequest
    response: dict[str, Any] | None
    handler_failed: bool = False
    skipped: str | None = None
    no_answer: bool = False


def _to_response(result: Any) -> dict[str, Any]:
    """A handler's return value as a callback response body."""
    if hasattr(result, "to_dict") and callable(result.to_dict):
        result = result.to_dict()
    elif isinstance(result, (str, bytes)):
        result = json.loads(result)
    if not isinstance(result, dict):
        raise TypeError(f"callback handlers return a dict or a to_dict() object, not {type(result).__name__}")
    return result


class Bot(BotAPIMixin):
    """A Feishu/Lark bot: verifies requests, dispatches them, calls the OpenAPI.

    Args:
        app_id: ``cli_...``.
        app_secret: needed only for OpenAPI calls (``bot.api``, ``reply_text``, ...).
        verification_token: checked against the token every event carries; the sha1 key of legacy cards.
        encrypt_key: decrypts ``{"encrypt": ...}`` bodies; when set, every request but url_verification
            must carry a valid sha256 ``X-Lark-Signature`` (protocol.md §3).
        host: the OpenAPI base URL, ``https://open.feishu.cn`` or ``https://open.larksuite.com`` (Lark);
            default ``$WSLARKBOT_FEISHU_HOST``, else Feishu (:func:`openapi_host`).
        http_transport / async_http_transport: httpx transports for the OpenAPI clients (tests).
        clock: epoch seconds, for the OpenAPI token cache and ``drop_older_than``.
        ordering: ``"chat"`` (default): messages of one chat are handled one at a time, in arrival order,
            different chats in parallel; ``None``: no ordering; or ``key_fn(event) -> Hashable | None``.
            See :mod:`wslarkbot.chat`. Waiting messages hold no thread (async path) but do count against
            the transport's bound (the client's ``max_in_flight``).
        dedup: ``True`` (a :class:`~wslarkbot.dedup.MemoryDeduplicator`) or a
            :class:`~wslarkbot.dedup.Deduplicator`: an event already handled (``message_id`` for messages,
            else ``event_id``/``uuid``) is not handled again, and one still being handled is not answered
            (:attr:`DispatchResult.no_answer`, :mod:`wslarkbot.dedup`); off by default.
        drop_older_than: seconds or a ``timedelta``: received messages whose ``create_time`` is older are
            skipped (logged at info, without content). Off (None) by default.

    No timestamp window is enforced on signatures: Feishu documents none, and the relay may hold a request
    while a client reconnects.
    """

    def __init__(
        self,
        app_id: str,
        app_secret: str | None = None,
        verification_token: str | None = None,
        encrypt_key: str | None = None,
        host: str | None = None,
        *,
        http_transport: Any = None,
        async_http_transport: Any = None,
        clock: Callable[[], float] = time.time,
        ordering: Ordering = "chat",
        dedup: bool | Deduplicator | None = None,
        drop_older_than: float | timedelta | None = None,
        app_type: AppType = "self_built",
        tickets: AppTicketStore | None = None,
    ) -> None:
        if not app_id:
            raise ConfigurationError("app_id is required")
        if app_type not in ("self_built", "store"):
            raise ConfigurationError(f"app_type must be 'self_built' or 'store', not {app_type!r}")
        self.app_type: AppType = app_type
        #: where app_ticket events are kept (store apps; docs/openapi.md "Store apps")
        self.tickets: AppTicketStore = tickets or MemoryTicketStore()
        self.app_id = app_id
        self.app_secret = app_secret
        self.verification_token = verification_token
        self.encrypt_key = encrypt_key
        self.host = openapi_host(host)
        self._http_transport = http_transport
        self._async_http_transport = async_http_transport
        self._clock = clock
        self._registrations: list[tuple[Callable[[FeishuEvent], bool], Handler]] = []
        self._api: OpenAPIClient | None = None
        self._async_api: AsyncOpenAPIClient | None = None
        self._api_lock = threading.Lock()
        self._key_fn = resolve_ordering(ordering)
        self._dedup = resolve_dedup(dedup)
        self.drop_older_than = seconds(drop_older_than, "drop_older_than")
        self._sync_locks = KeyedLocks()
        self._async_locks = AsyncKeyedLocks()

    def __repr__(self) -> str:  # never show secrets
        return f"{type(self).__name__}(app_id={self.app_id!r}, host={self.host!r})"

    # -- handler registration ------------------------------------------------------------------------

    def _register(self, predicate: Callable[[FeishuEvent], bool], func: H) -> H:
        if not callable(func):
            raise ConfigurationError("a handler must be callable")
        self._registrations.append((predicate, func))
        return func

    def on(self, event_type: str) -> Callable[[H], H]:
        """Register ``handler(event)`` for a v2 event type, a callback type or a v1 ``event.type``.

        Example: ``@bot.on("im.chat.member.bot.added_v1")``, ``@bot.on("app_ticket")``.
        """
        if not isinstance(event_type, str) or not event_type or event_type == "url_verification":
            raise ConfigurationError("on() needs an event type (url_verification is answered by the Bot)")
        return lambda func: self._register(lambda e: e.event_type == event_type, func)

    def on_v1(self, event_type: str) -> Callable[[H], H]:
        """Register ``handler(event: EventV1)`` for v1 events whose ``event.type`` is ``event_type``."""
        if not isinstance(event_type, str) or not event_type:
            raise ConfigurationError("on_v1() needs an event type")
        return lambda func: self._register(
            lambda e: isinstance(e, EventV1) and e.event_type == event_type, func
        )

    def on_text(self, func: H) -> H:
        """Register ``handler(event: MessageEvent)`` for received ``text`` messages."""
        return self._register(lambda e: isinstance(e, MessageEvent) and e.message_type == "text", func)

    def on_card_action(self, func: H) -> H:
        """Register ``handler(event: CardAction | LegacyCardAction)``; its return value is the response."""
        return self._register(lambda e: isinstance(e, (CardAction, LegacyCardAction)), func)

    def on_event(self, func: H) -> H:
        """Register ``handler(event)`` for every event and callback (not url_verification)."""
        return self._register(lambda e: True, func)

    def handlers_for(self, event: FeishuEvent) -> list[Handler]:
        """The registered handlers matching ``event``, in registration order."""
        if isinstance(event, UrlVerification):
            return []
        return [func for predicate, func in self._registrations if predicate(event)]

    # -- verification --------------------------------------------------------------------------------

    @staticmethod
    def _envelope(message: Any) -> Envelope:
        if isinstance(message, Envelope):
            return message
        try:
            if isinstance(message, (str, bytes)):
                message = json.loads(message)
            if not isinstance(message, Mapping):
                raise MalformedRequestError("message is not a relay envelope")
            env = Envelope.from_dict(message)
        except (ProtocolError, ValueError) as exc:
            raise MalformedRequestError("message is not a relay envelope") from exc
        if isinstance(env.body, str):  # a relay that forwards the body as text
            env = Envelope(env.headers, env.body, env.raw_body or env.body, env.extra)
            try:
                env.body = json.loads(env.body)
            except ValueError as exc:
                raise MalformedRequestError("body is not JSON") from exc
        return env

    def parse(self, message: Mapping[str, Any] | Envelope | str | bytes) -> FeishuRequest:
        """Verify and decode one relay envelope, without calling any handler.

        Args:
            message: ``{"headers": {...}, "body": ..., "raw_body"?: "..."}`` or a :class:`wire.Envelope`.

        Returns:
            The verified :class:`FeishuRequest`.

        Raises:
            DecryptError: encrypted body and no (or a wrong) encrypt_key.
            SignatureError: a required ``X-Lark-Signature`` is missing or wrong.
            TokenMismatchError: the payload's Verification Token is not the configured one.
            MalformedRequestError: not a Feishu payload.
        """
        env = self._envelope(message)
        verified = verify_request(
            env.headers,
            env.body,
            env.raw_bytes(),
            encrypt_key=self.encrypt_key,
            verification_token=self.verification_token,
        )
        event = verified.event
        logger.debug(
            "request %s: %s verified (signature checked: %s)",
            env.request_id or "-",
            event.event_type,
            verified.signature_checked,
        )
        return FeishuRequest(
            event,
            dict(env.headers),
            encrypted=verified.encrypted,
            signature_checked=verified.signature_checked,
        )

    # -- dispatch ------------------------------------------------------------------------------------

    def on_message(self, data: dict[str, Any], raw_message: Any, **kwargs: Any) -> Any:
        """Called with every verified event or callback (not url_verification); override it, or register
        handlers. The default runs the matching handlers synchronously and returns the callback response.

        Args:
            data: the decrypted payload dict.
            raw_message: the relay envelope as received (dict or :class:`wire.Envelope`).
        """
        event = parse_payload(data)
        if isinstance(raw_message, Envelope):
            request_id = raw_message.request_id or "-"
        else:
            headers = raw_message.get("headers") if isinstance(raw_message, Mapping) else None
            request_id = str(headers.get("x-request-id", "-")) if isinstance(headers, Mapping) else "-"
        calls = [Call(f, (event,), handler_name(f)) for f in self.handlers_for(event)]
        response, _ = drive_sync(self._run_calls(event, request_id, calls), self._sync_locks)
        return response

    def _on_message_overridden(self) -> bool:
        return getattr(type(self).on_message, "__func__", type(self).on_message) is not Bot.on_message

    def _is_stale(self, request: FeishuRequest) -> bool:
        """A received message older than ``drop_older_than`` (logged at info, without content)."""
        if self.drop_older_than is None:
            return False
        age = message_age(request.event, self._clock())
        if age is None or age <= self.drop_older_than:
            return False
        logger.info(
            "request %s: dropping message %s, %.0f s old (drop_older_than=%.0f s)",
            request.request_id or "-",
            getattr(request.event, "message_id", "-"),
            age,
            self.drop_older_than,
        )
        return True

    def _flow(self, message: Any, request: FeishuRequest | None) -> Generator[Step, Any, DispatchResult]:
        """The one dispatch algorithm: parse (unless ``request`` is ``message`` already verified), answer a
        challenge, skip stale and duplicate events, take the event's ordering lock, call the handlers
        (yielded steps), release the lock."""
        if request is None:
            request = self.parse(message)
        event = request.event
        rid = request.request_id or "-"
        if isinstance(event, UrlVerification):
            return DispatchResult(request, {"challenge": event.challenge})
        if event.event_type == "app_ticket" and isinstance(event, EventV1):
            self._keep_ticket(event)
        if self._is_stale(request):
            return DispatchResult(request, None, skipped="stale")
        claim = claim_event(self._dedup, self.app_id, event, rid)
        if claim.in_progress:  # answered by nobody: Feishu (or the relay) delivers it again later
            return DispatchResult(request, None, skipped="in-progress", no_answer=True)
        if claim.duplicate:
            return DispatchResult(request, claim.duplicate_response(event), skipped="duplicate")
        tenant = event.tenant_key
        if self._on_message_overridden():
            calls = [Call(self.on_message, (request.data, message), "on_message", tenant)]
        else:  # dispatch each handler directly, so async ones are awaited on the caller's loop
            calls = [Call(f, (event,), handler_name(f), tenant) for f in self.handlers_for(event)]
        if not calls:
            logger.debug("request %s: no handler for %s", rid, event.event_type)
        key = self._ordering_key(event) if calls else None
        try:
            if key is not None:
                yield Acquire(key)
            response, failed = yield from self._run_calls(event, rid, calls)
            if key is not None:
                yield Release(key)
        except BaseException:  # cancelled (GeneratorExit): a later delivery may run the handlers
            claim.finish(False)
            raise
        claim.finish(not failed, response)
        return DispatchResult(request, response, failed)

    def _keep_ticket(self, event: EventV1) -> None:
        """Store an ``app_ticket`` event's ticket (store apps make their tokens from the latest one)."""
        ticket, app_id = event.event.get("app_ticket"), event.event.get("app_id", self.app_id)
        if not isinstance(ticket, str) or not ticket or app_id != self.app_id:
            logger.warning("ignored an app_ticket event without a ticket for %s", self.app_id)
            return
        self.tickets.put(self.app_id, ticket)
        logger.info("app_ticket of %s received", self.app_id)

    def _ordering_key(self, event: FeishuEvent) -> Hashable | None:
        if self._key_fn is None or event.is_callback:
            return None
        try:
            return self._key_fn(event)
        except Exception:  # a broken key function must not lose the event: run it unordered
            logger.exception("ordering key function failed on %s; handling it unordered", event.event_type)
            return None

    def _run_calls(
        self, event: FeishuEvent, request_id: str, calls: list[Call]
    ) -> Generator[Call, Any, tuple[dict[str, Any] | None, bool]]:
        response: dict[str, Any] | None = None
        failed = False
        for call in calls:
            try:
                result = yield call
                if event.is_callback and response is None and result is not None:
                    response = _to_response(result)
            except Exception:
                failed = True
                logger.exception(
                    "handler %s failed on %s (request %s)", call.name, event.event_type, request_id
                )
        if not event.is_callback:
            return None, failed
        if failed:
            return None, True
        return ({} if response is None else response), False

    def dispatch(
        self, message: Mapping[str, Any] | Envelope | str | bytes, *, request: FeishuRequest | None = None
    ) -> DispatchResult:
        """:meth:`process_message` with the verified request and the handler outcome (for adapters).

        Args:
            request: what :meth:`parse` returned for ``message``, if the caller verified it already (the
                client does: one signature check and one decryption per envelope).
        """
        return drive_sync(self._flow(message, request), self._sync_locks)

    async def adispatch(
        self,
        message: Mapping[str, Any] | Envelope | str | bytes,
        *,
        executor: Executor | None = None,
        request: FeishuRequest | None = None,
    ) -> DispatchResult:
        """Async :meth:`dispatch`: the same flow; ``async def`` handlers awaited, ``def`` in ``executor``."""
        return await drive_async(self._flow(message, request), executor, self._async_locks)

    def process_message(self, message: Mapping[str, Any] | Envelope | str | bytes) -> dict[str, Any] | None:
        """Verify, decrypt, dispatch one relay envelope; return what goes back to Feishu.

        Returns:
            ``{"challenge": ...}`` for url_verification; the response of a callback (``{}`` when the
            handlers returned None; None when a handler raised); None for events. None too when nothing
            must be answered (:attr:`DispatchResult.no_answer`): use :meth:`dispatch` to tell.

        Raises:
            RequestRejected: verification failed (a subclass per reason); no handler was called.
        """
        return self.dispatch(message).response

    async def aprocess_message(
        self, message: Mapping[str, Any] | Envelope | str | bytes, *, executor: Executor | None = None
    ) -> dict[str, Any] | None:
        """Async :meth:`process_message`; ``def`` handlers (and a ``def on_message``) run in ``executor``
        (None: the loop's default executor)."""
        return (await self.adispatch(message, executor=executor)).response
