"""Feishu OpenAPI logic with no I/O: request building, response interpretation, the call flow.

Both :class:`~wslarkbot.openapi.sync.OpenAPIClient` and :class:`~wslarkbot.openapi.aio.AsyncOpenAPIClient`
drive the same generators (the pattern of ``httpx.Auth.auth_flow``). A flow yields *steps*:

- an :class:`HTTPRequest`: the driver performs it and sends back an :class:`HTTPResponse`;
- a :class:`Sleep`: the driver waits that many seconds and sends back ``None``;
- a :class:`NeedToken`: the driver runs :meth:`OpenAPICore.token_flow` under its lock (``threading.Lock``
  or ``asyncio.Lock``) and sends back the token string.

The flow ends with ``StopIteration.value``, the result. Feishu facts implemented here come from
protocol.md §8 (paths, error shape, rate limits, token refresh rule).
"""

from __future__ import annotations

import collections
import dataclasses
import email.message
import json
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import CardValidationError, ConfigurationError, FeishuAPIError, RateLimitedError
from .tickets import AppTicketStore, MemoryTicketStore
from .token import (
    APP_TOKEN_PATH,
    MAX_TENANTS,
    STORE_APP_TOKEN_PATH,
    STORE_TENANT_TOKEN_PATH,
    TICKET_RESEND_PATH,
    TOKEN_PATH,
    AppType,
    NoAppTicket,
    TokenCache,
)

__all__ = [
    "DEFAULT_HOST",
    "LARK_HOST",
    "MAX_RATE_LIMIT_WAIT",
    "RATE_LIMIT_CODE",
    "TOKEN_INVALID_CODES",
    "HTTPRequest",
    "HTTPResponse",
    "NeedToken",
    "NoAppTicket",
    "OpenAPICore",
    "OpenAPIResponse",
    "FilePart",
    "Resource",
    "Sleep",
    "Step",
    "content_to_string",
    "exchange",
    "http_arguments",
    "saving",
    "interpret",
]

DEFAULT_HOST = "https://open.feishu.cn"
LARK_HOST = "https://open.larksuite.com"

#: Business code of the gateway's frequency limit (HTTP 429, sometimes HTTP 400) — protocol.md §8.
RATE_LIMIT_CODE = 99991400
#: "Need a token" (99991661), "tenant token invalid" (99991663), "token expired" (99991668).
TOKEN_INVALID_CODES = frozenset({99991661, 99991663, 99991668})
#: Longest wait honoured for one ``x-ogw-ratelimit-reset``; larger values are capped.
MAX_RATE_LIMIT_WAIT = 10.0
#: Wait used when a rate-limited answer carries no usable ``x-ogw-ratelimit-reset``.
DEFAULT_RATE_LIMIT_WAIT = 1.0

#: Size limits of the ``content`` string (protocol.md §8 "Send a message").
CONTENT_LIMITS = {"text": 150 * 1024, "post": 30 * 1024, "interactive": 30 * 1024}
#: The ``uuid`` deduplication key is at most 50 characters.
MAX_UUID_LENGTH = 50
RECEIVE_ID_TYPES = frozenset({"open_id", "user_id", "union_id", "email", "chat_id"})


@dataclass(frozen=True)
class FilePart:
    """One file of a multipart body: the name Feishu sees, the bytes, their type."""

    filename: str
    content: bytes = field(repr=False)
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class HTTPRequest:
    """One HTTP request to perform; ``path`` is relative to the client's host.

    A request with ``files`` is sent as ``multipart/form-data`` with ``data`` as its other fields (and no
    JSON). One with ``raw`` may be answered with a file instead of JSON (downloads); ``save_to`` streams
    such an answer to that path instead of memory.
    """

    method: str
    path: str
    json: Any = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, str] | None = None
    files: Mapping[str, FilePart] | None = None
    raw: bool = False
    save_to: str | None = None

    def with_headers(self, headers: Mapping[str, str]) -> HTTPRequest:
        """The same request with ``headers`` added."""
        return dataclasses.replace(self, headers={**self.headers, **headers})


@dataclass(frozen=True)
class HTTPResponse:
    """What the driver hands back after performing an :class:`HTTPRequest`.

    ``saved_to`` is the path a file answer was streamed to (``content`` is then empty); a JSON answer is
    always in ``content``.
    """

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    saved_to: str | None = None


@dataclass(frozen=True)
class Resource:
    """A file Feishu answered (a message's image or file): its bytes, or the path it was saved to.

    Attributes:
        content: the bytes (empty when ``path`` is set).
        content_type: as Feishu sent it (``image/png``, ``application/octet-stream``...).
        filename: from ``Content-Disposition``, when Feishu names the file.
        path: where it was saved (``download_resource(..., path=...)``), else None.
    """

    content: bytes = field(repr=False)
    content_type: str
    filename: str | None
    path: str | None = None

    @classmethod
    def of(cls, response: HTTPResponse) -> Resource:
        disposition = _header(response.headers, "content-disposition") or ""
        msg = email.message.Message()
        msg["content-disposition"] = disposition
        filename = msg.get_filename()
        content_type = _header(response.headers, "content-type") or "application/octet-stream"
        return cls(response.content, content_type, filename, response.saved_to)


def http_arguments(request: HTTPRequest) -> dict[str, Any]:
    """The keyword arguments of ``httpx.Client.build_request`` for ``request`` (both drivers)."""
    out: dict[str, Any] = {"params": request.params, "headers": dict(request.headers)}
    if request.files is not None:
        out["files"] = {k: (f.filename, f.content, f.content_type) for k, f in request.files.items()}
        out["data"] = dict(request.data or {})
    else:
        out["json"] = request.json
    return out


def saving(status_code: int, headers: Mapping[str, str]) -> bool:
    """Whether a streamed answer is the file itself (to be saved), not a JSON error to read."""
    return status_code == 200 and "json" not in (_header(headers, "content-type") or "").lower()


def is_json(response: HTTPResponse) -> bool:
    """Whether the answer is JSON (an API answer or an error), not a file."""
    content_type = (_header(response.headers, "content-type") or "").lower()
    return "json" in content_type or (not content_type and response.content[:1] == b"{")


@dataclass(frozen=True)
class Sleep:
    """Ask the driver to wait ``seconds`` before resuming the flow."""

    seconds: float


@dataclass(frozen=True)
class NeedToken:
    """Ask the driver for a tenant_access_token (of ``tenant_key``, for a store app); ``stale`` is a token
    the server just rejected."""

    stale: str | None = None
    tenant_key: str | None = None


Step = HTTPRequest | Sleep | NeedToken


class OpenAPIResponse(dict[str, Any]):
    """The ``data`` object of a successful answer, as a ``dict``.

    The original project returned the ``httpx.Response``; code written for it that calls
    ``resp.json()`` keeps working: :meth:`json` returns the *whole* decoded body
    (``{"code": 0, "msg": ..., "data": {...}}``) and :attr:`status_code` / :attr:`headers` /
    :attr:`log_id` describe the HTTP response.
    """

    def __init__(
        self, data: Mapping[str, Any], *, body: Any, status_code: int, headers: Mapping[str, str]
    ) -> None:
        super().__init__(data)
        self.body = body
        self.status_code = status_code
        self.headers = dict(headers)

    def json(self) -> Any:
        """The whole decoded response body."""
        return self.body

    @property
    def log_id(self) -> str | None:
        return _header(self.headers, "x-tt-logid")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _log_id(headers: Mapping[str, str], body: Any) -> str | None:
    log_id = _header(headers, "x-tt-logid")
    if log_id:
        return log_id
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        value = body["error"].get("log_id")
        return str(value) if value else None
    return None


def _rate_limit_wait(headers: Mapping[str, str]) -> float:
    raw = _header(headers, "x-ogw-ratelimit-reset")
    try:
        wait = float(raw) if raw is not None else DEFAULT_RATE_LIMIT_WAIT
    except ValueError:
        wait = DEFAULT_RATE_LIMIT_WAIT
    return min(max(wait, 0.0), MAX_RATE_LIMIT_WAIT)


def interpret(response: HTTPResponse) -> dict[str, Any]:
    """Decode a response body and return it when ``code == 0``.

    Raises:
        RateLimitedError: HTTP 429 or code 99991400 (``retry_after`` is the capped reset wait).
        FeishuAPIError: any other ``code != 0``; code ``-1`` when the body is not a JSON object.
    """
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    log_id = _log_id(response.headers, body)
    code = body.get("code", -1 if response.status_code >= 400 else 0) if isinstance(body, dict) else -1
    msg = str(body.get("msg", "")) if isinstance(body, dict) else ""
    if response.status_code == 429 or code == RATE_LIMIT_CODE:
        raise RateLimitedError(
            RATE_LIMIT_CODE,
            msg or "request trigger frequency limit",
            retry_after=_rate_limit_wait(response.headers),
            log_id=log_id,
            http_status=response.status_code,
            body=body,
        )
    if not isinstance(body, dict):
        raise FeishuAPIError(
            -1,
            f"non-JSON response (HTTP {response.status_code})",
            log_id=log_id,
            http_status=response.status_code,
        )
    if not isinstance(code, int):
        raise FeishuAPIError(
            -1,
            f"malformed response code {code!r}",
            log_id=log_id,
            http_status=response.status_code,
            body=body,
        )
    if code != 0 or response.status_code >= 400:
        raise FeishuAPIError(
            code or -1,
            msg or f"HTTP {response.status_code}",
            log_id=log_id,
            http_status=response.status_code,
            body=body,
        )
    return body


def exchange(
    request: HTTPRequest, max_retries: int
) -> Generator[Step, Any, tuple[HTTPResponse, dict[str, Any] | None]]:
    """Perform ``request``, honouring rate limits: wait the reset time and retry up to ``max_retries``.

    Returns the raw response and its decoded body (None: a ``raw`` request answered with a file). Raises
    what :func:`interpret` raises; a rate limit still in force after ``max_retries`` retries is re-raised
    as :class:`RateLimitedError`.
    """
    retries = 0
    while True:
        response: HTTPResponse = yield request
        if request.raw and response.status_code == 200 and not is_json(response):
            return response, None
        try:
            return response, interpret(response)
        except RateLimitedError as exc:
            if retries >= max_retries:
                raise
            retries += 1
            yield Sleep(exc.retry_after if exc.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT)


def content_to_string(content: Any) -> str:
    """Serialise a message ``content`` to the JSON string Feishu expects in the ``content`` field.

    Accepts a ``dict`` (cards and message builders are dicts), a JSON string of an object (sent
    unchanged), or any object with ``to_dict()``. Objects with ``to_dict()`` are serialised through it,
    so card limits are checked. Raises :class:`ConfigurationError` for anything else.
    """
    to_dict: Callable[[], Any] | None = getattr(content, "to_dict", None)
    if callable(to_dict):
        return json.dumps(to_dict(), ensure_ascii=False, separators=(",", ":"))
    if isinstance(content, Mapping):
        return json.dumps(dict(content), ensure_ascii=False, separators=(",", ":"))
    if isinstance(content, str):
        try:
            parsed = json.loads(content)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ConfigurationError(
                'content string must be a JSON object such as \'{"text": "hi"}\'; '
                "use send_text() for plain text"
            )
        return content
    raise ConfigurationError(
        f"content must be a dict, a JSON string or have to_dict(), not {type(content).__name__}"
    )


def _msg_type_of(content: Any, msg_type: str | None) -> str:
    if msg_type:
        return msg_type
    inferred = getattr(content, "msg_type", None)
    return inferred if isinstance(inferred, str) else "text"


def _check_size(msg_type: str, content: str) -> None:
    limit = CONTENT_LIMITS.get(msg_type)
    size = len(content.encode("utf-8"))
    if limit is not None and size > limit:
        raise CardValidationError(f"{msg_type} content is {size} bytes; Feishu accepts at most {limit}")


def _check_uuid(uuid: str | None) -> None:
    if uuid is not None and not 0 < len(uuid) <= MAX_UUID_LENGTH:
        raise ConfigurationError(f"uuid must be 1..{MAX_UUID_LENGTH} characters")


def _card_dict(card: Any) -> dict[str, Any]:
    to_dict = getattr(card, "to_dict", None)
    if callable(to_dict):
        result = to_dict()
    elif isinstance(card, str):
        result = json.loads(card)
    else:
        result = card
    if not isinstance(result, dict):
        raise ConfigurationError("card must be a dict, a JSON object string or have to_dict()")
    return dict(result)


class OpenAPICore:
    """Requests and flows for one Feishu app; shared by the sync and asyncio clients. No I/O.

    Args:
        app_id, app_secret: the app's credentials.
        clock: seconds since the epoch, injectable for token-expiry tests.
        max_retries: retries after a rate-limited answer (each waits ``x-ogw-ratelimit-reset``, capped).
        app_type: ``"self_built"`` (a custom app of one tenant) or ``"store"`` (a marketplace app: tokens
            from the ``app_ticket``, one tenant token per ``tenant_key``; :mod:`.token`).
        tickets: where a store app's ``app_ticket`` is kept (default: in memory).
    """

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        *,
        clock: Callable[[], float],
        max_retries: int,
        app_type: AppType = "self_built",
        tickets: AppTicketStore | None = None,
    ) -> None:
        if not app_id or not app_secret:
            raise ConfigurationError("app_id and app_secret are required for the OpenAPI client")
        if max_retries < 0:
            raise ConfigurationError("max_retries must be >= 0")
        if app_type not in ("self_built", "store"):
            raise ConfigurationError(f"app_type must be 'self_built' or 'store', not {app_type!r}")
        self.app_id = app_id
        self._app_secret = app_secret
        self.app_type: AppType = app_type
        self.tickets = tickets or MemoryTicketStore()
        self.max_retries = max_retries
        self._clock = clock
        self._tenant_tokens: collections.OrderedDict[str | None, TokenCache] = collections.OrderedDict()
        self._app_token = TokenCache("app_access_token", clock=clock)

    def __repr__(self) -> str:  # never show the secret
        return f"OpenAPICore(app_id={self.app_id!r}, app_type={self.app_type!r})"

    # -- tokens (token.py) --------------------------------------------------------------------------

    def _credentials(self) -> dict[str, str]:
        return {"app_id": self.app_id, "app_secret": self._app_secret}

    def _tenant_cache(self, tenant_key: str | None) -> TokenCache:
        cache = self._tenant_tokens.get(tenant_key)
        if cache is None:
            if len(self._tenant_tokens) >= MAX_TENANTS:
                self._tenant_tokens.popitem(last=False)
            cache = self._tenant_tokens[tenant_key] = TokenCache("tenant_access_token", clock=self._clock)
        else:
            self._tenant_tokens.move_to_end(tenant_key)
        return cache

    def token_flow(
        self, stale: str | None = None, tenant_key: str | None = None
    ) -> Generator[Step, Any, str]:
        """The cached tenant_access_token, or fetch one. Drivers run this under their token lock.

        Raises:
            ConfigurationError: a store app called without a tenant (``api.for_tenant(key)``).
            NoAppTicket: a store app has no ``app_ticket`` yet.
        """
        if self.app_type == "store" and not tenant_key:
            raise ConfigurationError(
                "a store app calls the OpenAPI as one of its tenants: use api.for_tenant(tenant_key) "
                "(the tenant_key of the event you are handling; bot.api does this inside a handler)"
            )
        cache = self._tenant_cache(tenant_key if self.app_type == "store" else None)
        cached = cache.current(stale=stale)
        if cached is not None:
            return cached
        if self.app_type == "self_built":
            _, body = yield from exchange(
                HTTPRequest("POST", TOKEN_PATH, self._credentials()), self.max_retries
            )
            return cache.accept(body or {})
        app_token = yield from self.app_token_flow()
        for attempt in range(2):
            request = HTTPRequest(
                "POST", STORE_TENANT_TOKEN_PATH, {"app_access_token": app_token, "tenant_key": tenant_key}
            )
            try:
                _, body = yield from exchange(request, self.max_retries)
            except FeishuAPIError as exc:
                if exc.code not in TOKEN_INVALID_CODES or attempt:
                    raise
                app_token = yield from self.app_token_flow(stale=app_token)
                continue
            return cache.accept(body or {})
        raise AssertionError("unreachable")  # pragma: no cover

    def app_token_flow(self, stale: str | None = None) -> Generator[Step, Any, str]:
        """The cached app_access_token, or fetch one (a store app's from its latest ``app_ticket``)."""
        cached = self._app_token.current(stale=stale)
        if cached is not None:
            return cached
        if self.app_type == "self_built":
            request = HTTPRequest("POST", APP_TOKEN_PATH, self._credentials())
        else:
            ticket = self.tickets.get(self.app_id)
            if not ticket:
                raise NoAppTicket(
                    f"no app_ticket for store app {self.app_id} yet: Feishu pushes one every hour and on "
                    "request (api.resend_app_ticket(); the client asks at start)"
                )
            request = HTTPRequest("POST", STORE_APP_TOKEN_PATH, {**self._credentials(), "app_ticket": ticket})
        _, body = yield from exchange(request, self.max_retries)
        return self._app_token.accept(body or {})

    def resend_ticket_flow(self) -> Generator[Step, Any, OpenAPIResponse]:
        """Ask Feishu to push a fresh ``app_ticket`` event now (store apps)."""
        response, body = yield from exchange(
            HTTPRequest("POST", TICKET_RESEND_PATH, self._credentials()), self.max_retries
        )
        return OpenAPIResponse({}, body=body, status_code=response.status_code, headers=response.headers)

    # -- calls ---------------------------------------------------------------------------------------

    def call_flow(
        self, request: HTTPRequest, tenant_key: str | None = None
    ) -> Generator[Step, Any, OpenAPIResponse]:
        """Authorise and perform ``request``; on a token-invalid code refresh once and retry once."""
        response, body = yield from self._authorised(request, tenant_key)
        if body is None:  # pragma: no cover - only raw requests are answered with files
            raise FeishuAPIError(-1, f"non-JSON response (HTTP {response.status_code})")
        data = body.get("data")
        return OpenAPIResponse(
            data if isinstance(data, dict) else {},
            body=body,
            status_code=response.status_code,
            headers=response.headers,
        )

    def download_flow(
        self, request: HTTPRequest, tenant_key: str | None = None
    ) -> Generator[Step, Any, Resource]:
        """Authorise and perform a ``raw`` request; the file it is answered with.

        Raises:
            FeishuAPIError: Feishu answered JSON (an error) instead of a file.
        """
        response, body = yield from self._authorised(request, tenant_key)
        if body is not None:
            raise FeishuAPIError(-1, "expected a file, Feishu answered JSON", body=body)
        return Resource.of(response)

    def _authorised(
        self, request: HTTPRequest, tenant_key: str | None
    ) -> Generator[Step, Any, tuple[HTTPResponse, dict[str, Any] | None]]:
        refreshed = False
        stale: str | None = None
        while True:
            token: str = yield NeedToken(stale, tenant_key)
            authorised = request.with_headers({"Authorization": f"Bearer {token}"})
            try:
                return (yield from exchange(authorised, self.max_retries))
            except FeishuAPIError as exc:
                if exc.code in TOKEN_INVALID_CODES and not refreshed:
                    refreshed, stale = True, token
                    continue
                raise

    # -- request builders (protocol.md §8) ----------------------------------------------------------

    @staticmethod
    def generic(
        method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None
    ) -> HTTPRequest:
        if not path.startswith("/"):
            raise ConfigurationError("path must start with '/', e.g. '/open-apis/im/v1/messages'")
        return HTTPRequest(method.upper(), path, json, dict(params) if params else None)

    @staticmethod
    def send(
        receive_id: str, content: Any, msg_type: str | None, receive_id_type: str, uuid: str | None
    ) -> HTTPRequest:
        if receive_id_type not in RECEIVE_ID_TYPES:
            raise ConfigurationError(f"receive_id_type must be one of {sorted(RECEIVE_ID_TYPES)}")
        _check_uuid(uuid)
        kind = _msg_type_of(content, msg_type)
        text = content_to_string(content)
        _check_size(kind, text)
        body: dict[str, Any] = {"receive_id": receive_id, "msg_type": kind, "content": text}
        if uuid is not None:
            body["uuid"] = uuid
        return HTTPRequest("POST", "/open-apis/im/v1/messages", body, {"receive_id_type": receive_id_type})

    @staticmethod
    def reply(
        message_id: str, content: Any, msg_type: str | None, reply_in_thread: bool, uuid: str | None
    ) -> HTTPRequest:
        _check_uuid(uuid)
        kind = _msg_type_of(content, msg_type)
        text = content_to_string(content)
        _check_size(kind, text)
        body: dict[str, Any] = {"content": text, "msg_type": kind}
        if reply_in_thread:
            body["reply_in_thread"] = True
        if uuid is not None:
            body["uuid"] = uuid
        return HTTPRequest("POST", f"/open-apis/im/v1/messages/{message_id}/reply", body)

    @staticmethod
    def update(message_id: str, content: Any) -> HTTPRequest:
        text = content_to_string(content)
        _check_size("interactive", text)
        return HTTPRequest("PATCH", f"/open-apis/im/v1/messages/{message_id}", {"content": text})

    @staticmethod
    def delay_update_card(token: str, card: Any) -> HTTPRequest:
        # protocol.md §6c: the card is an object here, not a JSON string.
        data = _card_dict(card)
        _check_size("interactive", json.dumps(data, ensure_ascii=False, separators=(",", ":")))
        return HTTPRequest("POST", "/open-apis/interactive/v1/card/update", {"token": token, "card": data})
