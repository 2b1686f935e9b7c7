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

The dispatch logic is written once, as a generator (:meth:`Bot._flow`) that yields "call this handler"
steps; :meth:`Bot.process_message` drives it synchronously and :meth:`Bot.aprocess_message` on asyncio
(``async def`` handlers awaited on the loop, ``def`` handlers in an executor). In the sync driver an
``async def`` handler runs with :func:`asyncio.run` when no loop runs in the calling thread; inside a
running loop it cannot be waited for, and is reported as a failed handler (use ``aprocess_message``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from . import crypto
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
    DecryptError,
    MalformedRequestError,
    ProtocolError,
    SignatureError,
    TokenMismatchError,
)
from .wire import Envelope

if TYPE_CHECKING:
    from .openapi import AsyncOpenAPIClient, OpenAPIClient

__all__ = ["Bot", "DispatchResult", "Handler"]

logger = logging.getLogger("wslarkbot.bot")

T = TypeVar("T")
#: A handler: ``handler(event)``, plain or ``async``; callbacks' handlers return the response.
Handler = Callable[[Any], Any]
H = TypeVar("H", bound=Handler)

FEISHU_HOST = "https://open.feishu.cn"
_TS, _NONCE, _SIG = "x-lark-request-timestamp", "x-lark-request-nonce", "x-lark-signature"


@dataclass(frozen=True)
class _Call:
    """One step of the dispatch flow: call ``func(*args)`` and send back its result."""

    func: Callable[..., Any]
    args: tuple[Any, ...]
    name: str


@dataclass(frozen=True)
class DispatchResult:
    """What one request came to.

    Attributes:
        request: the verified request.
        response: what goes back to Feishu: ``{"challenge": ...}``, a callback's response, or None (events,
            and callbacks whose handler failed).
        handler_failed: a handler raised (it was logged); a webhook answers such a callback with 500.
    """

    request: FeishuRequest
    response: dict[str, Any] | None
    handler_failed: bool = False


def _to_response(result: Any) -> dict[str, Any]:
    """A handler's return value as a callback response body."""
    if hasattr(result, "to_dict") and callable(result.to_dict):
        result = result.to_dict()
    elif isinstance(result, (str, bytes)):
        result = json.loads(result)
    if not isinstance(result, dict):
        raise TypeError(f"callback handlers return a dict or a to_dict() object, not {type(result).__name__}")
    return result


def _is_async_callable(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    dunder_call = getattr(func, "__call__", None)  # noqa: B004 - an object with ``async def __call__``
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(dunder_call)


def _run_awaitable_sync(value: Awaitable[T]) -> T:
    """``asyncio.run`` an awaitable a sync handler call produced, when no loop runs in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        close = getattr(value, "close", None)
        if close is not None:
            close()  # never awaited: close it to avoid a "was never awaited" warning
        raise ConfigurationError("async handler called by process_message in a running event loop; "
                                 "use aprocess_message")

    async def _await() -> T:
        return await value

    return asyncio.run(_await())


def _drive_sync(flow: Generator[_Call, Any, T]) -> T:
    """Run a dispatch flow in the calling thread."""
    try:
        step = next(flow)
        while True:
            try:
                value = step.func(*step.args)
                if inspect.isawaitable(value):
                    value = _run_awaitable_sync(value)
            except Exception as exc:  # handed to the flow, which logs it
                step = flow.throw(exc)
            else:
                step = flow.send(value)
    except StopIteration as stop:
        return stop.value


async def _drive_async(flow: Generator[_Call, Any, T], executor: Executor | None) -> T:
    """Run a dispatch flow on the running loop; ``def`` steps run in ``executor``."""
    loop = asyncio.get_running_loop()
    try:
        step = next(flow)
        while True:
            try:
                if _is_async_callable(step.func):
                    value = await step.func(*step.args)
                else:
                    value = await loop.run_in_executor(executor, functools.partial(step.func, *step.args))
                    if inspect.isawaitable(value):
                        value = await value
            except Exception as exc:
                step = flow.throw(exc)
            else:
                step = flow.send(value)
    except StopIteration as stop:
        return stop.value


def _handler_name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


class Bot:
    """A Feishu/Lark bot: verifies requests, dispatches them, calls the OpenAPI.

    Args:
        app_id: ``cli_...``.
        app_secret: needed only for OpenAPI calls (``bot.api``, ``reply_text``, ...).
        verification_token: checked against the token every event carries; the sha1 key of legacy cards.
        encrypt_key: decrypts ``{"encrypt": ...}`` bodies; when set, every request but url_verification
            must carry a valid sha256 ``X-Lark-Signature`` (protocol.md §3).
        host: ``https://open.feishu.cn`` or ``https://open.larksuite.com`` (Lark).
        http_transport / async_http_transport: httpx transports for the OpenAPI clients (tests).
        clock: time source for the OpenAPI token cache.

    No timestamp window is enforced on signatures: Feishu documents none, and the relay may hold a request
    while a client reconnects.
    """

    def __init__(
        self,
        app_id: str,
        app_secret: str | None = None,
        verification_token: str | None = None,
        encrypt_key: str | None = None,
        host: str = FEISHU_HOST,
        *,
        http_transport: Any = None,
        async_http_transport: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not app_id:
            raise ConfigurationError("app_id is required")
        self.app_id = app_id
        self.app_secret = app_secret
        self.verification_token = verification_token
        self.encrypt_key = encrypt_key
        self.host = host.rstrip("/")
        self._http_transport = http_transport
        self._async_http_transport = async_http_transport
        self._clock = clock
        self._registrations: list[tuple[Callable[[FeishuEvent], bool], Handler]] = []
        self._api: OpenAPIClient | None = None
        self._async_api: AsyncOpenAPIClient | None = None
        self._api_lock = threading.Lock()

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
        body = env.body
        if not isinstance(body, dict):
            raise MalformedRequestError("body is not a JSON object")
        encrypted = "encrypt" in body
        signed = False
        data: Any = body
        if encrypted:
            if not self.encrypt_key:
                raise DecryptError("body is encrypted but no encrypt_key is configured")
            if env.has_signature:
                # Verify before decrypting: tampered ciphertext never reaches AES-CBC (no padding oracle).
                crypto.verify_event_signature(
                    env.headers.get(_TS), env.headers.get(_NONCE), env.headers.get(_SIG),
                    self.encrypt_key, env.raw_bytes(),
                )
                signed = True
            data = self._decrypt(body["encrypt"], self.encrypt_key)
        event = parse_payload(data)
        if isinstance(event, UrlVerification):
            # protocol.md §1, §3: no signature headers on challenges; the token is still checked.
            self._check_token(event, signed=signed)
        else:
            signed = signed or self._check_signature(env, event)
            self._check_token(event, signed=signed)
        logger.debug("request %s: %s verified (signature checked: %s)",
                     env.request_id or "-", event.event_type, signed)
        return FeishuRequest(event, dict(env.headers), encrypted=encrypted, signature_checked=signed)

    @staticmethod
    def _decrypt(encrypted: Any, encrypt_key: str) -> Any:
        """Decrypt and decode the ``encrypt`` field. Every failure raises the same message (the cause is
        chained), so an unsigned request cannot tell bad padding from bad plaintext."""
        try:
            if not isinstance(encrypted, str):
                raise DecryptError("encrypt field is not a string")
            return json.loads(crypto.decrypt(encrypted, encrypt_key))
        except (DecryptError, ValueError) as exc:
            raise DecryptError("cannot decrypt: wrong encrypt_key or corrupted body") from exc

    def _check_signature(self, env: Envelope, event: FeishuEvent) -> bool:
        """Check ``X-Lark-Signature`` where a configured secret applies; True when one was checked."""
        ts, nonce, sig = env.headers.get(_TS), env.headers.get(_NONCE), env.headers.get(_SIG)
        if isinstance(event, LegacyCardAction):
            # §3B: sha1 with the verification token; §9: the newer callback path signs legacy-shaped
            # callbacks with sha256 and the encrypt key, so either configured secret's signature is accepted.
            if not (self.verification_token or self.encrypt_key):
                return False
            if not (ts and nonce and sig):
                raise SignatureError("signature headers missing (X-Lark-Request-Timestamp/Nonce/Signature)")
            body = env.raw_bytes()
            by_token = bool(self.verification_token) and crypto.secure_equals(
                crypto.card_signature(ts, nonce, self.verification_token or "", body), sig
            )
            by_key = bool(self.encrypt_key) and crypto.secure_equals(
                crypto.event_signature(ts, nonce, self.encrypt_key or "", body), sig
            )
            if not (by_token or by_key):
                raise SignatureError("X-Lark-Signature does not match the legacy card body")
            return True
        if not self.encrypt_key:
            return False  # §3A: Feishu signs with the encrypt key only
        crypto.verify_event_signature(ts, nonce, sig, self.encrypt_key, env.raw_bytes())
        return True

    def _check_token(self, event: FeishuEvent, *, signed: bool) -> None:
        """Compare the carried Verification Token in constant time when one is configured."""
        expected = self.verification_token
        if not expected or isinstance(event, LegacyCardAction):  # legacy: authenticated by signature
            return
        carried = event.token
        if carried is None:
            if signed:
                return  # the signature already proves the sender knows the encrypt key (as the wheel does)
            raise TokenMismatchError("payload carries no verification token")
        if not crypto.secure_equals(carried, expected):
            raise TokenMismatchError("verification token does not match")

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
        calls = [_Call(f, (event,), _handler_name(f)) for f in self.handlers_for(event)]
        response, _ = _drive_sync(self._run_calls(event, request_id, calls))
        return response

    def _on_message_overridden(self) -> bool:
        return getattr(type(self).on_message, "__func__", type(self).on_message) is not Bot.on_message

    def _flow(self, message: Any) -> Generator[_Call, Any, DispatchResult]:
        """The one dispatch algorithm: parse, answer a challenge, or call the handlers (yielded steps)."""
        request = self.parse(message)
        event = request.event
        if isinstance(event, UrlVerification):
            return DispatchResult(request, {"challenge": event.challenge})
        if self._on_message_overridden():
            calls = [_Call(self.on_message, (request.data, message), "on_message")]
        else:  # dispatch each handler directly, so async ones are awaited on the caller's loop
            calls = [_Call(f, (event,), _handler_name(f)) for f in self.handlers_for(event)]
        if not calls:
            logger.debug("request %s: no handler for %s", request.request_id or "-", event.event_type)
        response, failed = yield from self._run_calls(event, request.request_id or "-", calls)
        return DispatchResult(request, response, failed)

    def _run_calls(
        self, event: FeishuEvent, request_id: str, calls: list[_Call]
    ) -> Generator[_Call, Any, tuple[dict[str, Any] | None, bool]]:
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

    def dispatch(self, message: Mapping[str, Any] | Envelope | str | bytes) -> DispatchResult:
        """:meth:`process_message` with the verified request and the handler outcome (for adapters)."""
        return _drive_sync(self._flow(message))

    async def adispatch(
        self, message: Mapping[str, Any] | Envelope | str | bytes, *, executor: Executor | None = None
    ) -> DispatchResult:
        """Async :meth:`dispatch`: the same flow; ``async def`` handlers awaited, ``def`` in ``executor``."""
        return await _drive_async(self._flow(message), executor)

    def process_message(self, message: Mapping[str, Any] | Envelope | str | bytes) -> dict[str, Any] | None:
        """Verify, decrypt, dispatch one relay envelope; return what goes back to Feishu.

        Returns:
            ``{"challenge": ...}`` for url_verification; the response of a callback (``{}`` when the
            handlers returned None; None when a handler raised); None for events.

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

    # -- OpenAPI -------------------------------------------------------------------------------------

    def _require_secret(self) -> str:
        if not self.app_secret:
            raise ConfigurationError("app_secret is required for OpenAPI calls")
        return self.app_secret

    @property
    def api(self) -> OpenAPIClient:
        """The sync OpenAPI client, created on first use."""
        with self._api_lock:
            if self._api is None:
                from .openapi import OpenAPIClient

                self._api = OpenAPIClient(
                    self.app_id, self._require_secret(), host=self.host,
                    transport=self._http_transport, clock=self._clock,
                )
            return self._api

    @property
    def async_api(self) -> AsyncOpenAPIClient:
        """The asyncio OpenAPI client, created on first use."""
        with self._api_lock:
            if self._async_api is None:
                from .openapi import AsyncOpenAPIClient

                self._async_api = AsyncOpenAPIClient(
                    self.app_id, self._require_secret(), host=self.host,
                    transport=self._async_http_transport, clock=self._clock,
                )
            return self._async_api

    # The original convenience methods, delegating to ``self.api``. ``msg_type=None`` means "text", or
    # the ``msg_type`` a card/message builder carries (so ``bot.send(open_id, card)`` works). Extra
    # keyword arguments (``uuid=``, ``reply_in_thread=``) are passed on.

    def send(
        self, receive_id: str, content: Any, msg_type: str | None = None, receive_id_type: str = "open_id",
        **kwargs: Any,
    ) -> Any:
        """Send a message (``POST /open-apis/im/v1/messages``); returns the created message."""
        return self.api.send(
            receive_id, content, msg_type=msg_type, receive_id_type=receive_id_type, **kwargs
        )

    def reply(self, message_id: str, content: Any, msg_type: str | None = None, **kwargs: Any) -> Any:
        """Reply to ``message_id``; ``reply_in_thread=True`` replies in a thread."""
        return self.api.reply(message_id, content, msg_type=msg_type, **kwargs)

    def update(self, message_id: str, content: Any) -> Any:
        """Replace a card the app sent (``PATCH /open-apis/im/v1/messages/:message_id``)."""
        return self.api.update(message_id, content)

    def send_text(self, receive_id: str, text: str, receive_id_type: str = "open_id", **kwargs: Any) -> Any:
        return self.api.send_text(receive_id, text, receive_id_type=receive_id_type, **kwargs)

    def reply_text(self, message_id: str, text: str, **kwargs: Any) -> Any:
        return self.api.reply_text(message_id, text, **kwargs)

    def send_card(
        self, receive_id: str, content: Any, receive_id_type: str = "open_id", **kwargs: Any
    ) -> Any:
        return self.api.send_card(receive_id, content, receive_id_type=receive_id_type, **kwargs)

    def reply_card(self, message_id: str, content: Any, **kwargs: Any) -> Any:
        return self.api.reply_card(message_id, content, **kwargs)

    def update_card(self, message_id: str, content: Any) -> Any:
        return self.api.update_card(message_id, content)

    def close(self) -> None:
        """Release the sync HTTP client (the async one needs :meth:`aclose`)."""
        with self._api_lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()

    async def aclose(self) -> None:
        """Release both HTTP clients."""
        with self._api_lock:
            aapi, self._async_api = self._async_api, None
        if aapi is not None:
            await aapi.aclose()
        self.close()
