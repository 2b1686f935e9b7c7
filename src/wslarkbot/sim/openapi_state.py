"""The fake Feishu OpenAPI's model: apps, tokens, messages, injected failures; no I/O (protocol.md §8, §11).

:class:`OpenAPIState` answers one :class:`FakeRequest` at a time with an :class:`Answer`, the way Feishu
would; :class:`~wslarkbot.sim.openapi_server.FakeOpenAPI` is this model served over HTTP. Use the model alone
to test rules without sockets::

    state = OpenAPIState()
    state.add_app("cli_test", "secret")
    request = FakeRequest("POST", TOKEN_PATH, body=b'{"app_id": "cli_test", "app_secret": "secret"}')
    answer = state.answer(request, state.record(request))
    assert answer.status == 200 and answer.body["tenant_access_token"].startswith("t-")

What it models: tenant tokens (7200 s; a new one only when < 30 min remain, the old one stays valid; wrong
secret -> error), ``Authorization: Bearer`` (missing -> 99991661, unknown/expired -> 99991663), message
create (``receive_id_type`` required, ``uuid`` idempotency for 1 h), reply (``reply_in_thread``, threads),
PATCH (interactive only, 14 days, 5 QPS per message -> 230020), ``interactive/v1/card/update`` (card token
30 min, 2 uses), 50 requests/s per app on messaging -> HTTP 429 99991400 with ``x-ogw-ratelimit-*``
headers, business errors as HTTP 400 ``{"code","msg"}``, ``X-Tt-Logid`` on every answer, and unknown
paths as a plain-text 404. Codes that protocol.md does not fix are the ``CODE_*`` constants below.

Time: token and card-token expiry, ``uuid`` windows and the 14-day PATCH rule use the injectable ``clock``;
the per-second rate limits use ``monotonic`` (they are about real request bursts).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import WslarkbotError
from .openapi_cards import CardEntity, CardKitStore, check_card
from .openapi_extras import Download, ExtrasStore, Part, parse_multipart
from .openapi_messages import CODE_VALIDATION, MessageStore, OpenAPIFailure, StoredMessage

__all__ = ["TOKEN_PATH", "Answer", "FakeRequest", "OpenAPIState", "RecordedCall", "StoredMessage"]

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
APP_TOKEN_PATH = "/open-apis/auth/v3/app_access_token/internal"
STORE_APP_TOKEN_PATH = "/open-apis/auth/v3/app_access_token"
STORE_TENANT_TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token"
TICKET_RESEND_PATH = "/open-apis/auth/v3/app_ticket/resend"
_UNAUTHENTICATED = frozenset(
    {TOKEN_PATH, APP_TOKEN_PATH, STORE_APP_TOKEN_PATH, STORE_TENANT_TOKEN_PATH, TICKET_RESEND_PATH}
)
TOKEN_LIFETIME = 7200
TOKEN_RENEW_WINDOW = 1800  # a new token is issued only when less than 30 min remain

CODE_NEED_TOKEN = 99991661
CODE_TOKEN_INVALID = 99991663
CODE_TOKEN_FORMAT = 99991671
CODE_RATE_LIMIT = 99991400
CODE_APP_UNKNOWN = 10003
CODE_BAD_SECRET = 10014
# Chosen by the fake (docs/openapi.md): the token endpoint does not fit the app's type; a bad app_ticket;
# a tenant that has not installed the store app.
CODE_APP_TYPE = 10015
CODE_BAD_TICKET = 10012
CODE_TENANT_UNKNOWN = 10013


@dataclass(frozen=True)
class FakeRequest:
    """One HTTP request as the fake sees it: ``headers`` as received (any case), ``body`` raw bytes."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str:
        """A header's value, case-insensitively; ``""`` when absent."""
        name = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == name), "")


@dataclass(frozen=True)
class Answer:
    """What to send back: ``body`` is JSON, or ``None`` for the plain-text 404 of unknown paths."""

    status: int
    body: dict[str, Any] | None
    headers: dict[str, str]
    code: int  # the answer's ``code``; -1 for the 404
    #: a file answer (``body`` is then None): what a resource download returns
    file: Download | None = None


@dataclass
class RecordedCall:
    """One request the fake received. ``headers`` keys are lower-case; Authorization is masked."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    app_id: str | None = None
    token_seq: int | None = None  # 1 for the first token issued to the app, 2 for the next...
    tenant_key: str | None = None  # the tenant whose token authorised the call
    answer_data: dict[str, Any] | None = None  # the ``data`` of a successful JSON answer
    status: int | None = None  # filled in when answered
    code: int | None = None


@dataclass
class _Token:
    value: str
    app_id: str
    seq: int
    expires_at: float
    tenant_key: str = ""
    kind: str = "tenant"  # or "app" (an app_access_token)


@dataclass
class _App:
    app_id: str
    secret: str = field(repr=False)  # a fake, but never shown either
    tenant_key: str
    current: _Token | None = None
    issued: int = 0
    sent: deque[float] = field(default_factory=deque)
    #: a store app: the tenants that installed it, its valid app_tickets (newest last)
    store: bool = False
    tenants: frozenset[str] = frozenset()
    tickets: list[str] = field(default_factory=list)
    #: current token per (kind, tenant_key)
    tokens: dict[tuple[str, str], _Token] = field(default_factory=dict)


@dataclass
class _Injection:
    kind: str  # "error" | "rate" | "token"
    remaining: int
    path_contains: str | None
    code: int = 0
    msg: str = ""
    http_status: int = 400
    reset: float = 0.0

    def matches(self, path: str) -> bool:
        if self.path_contains is None:
            return path not in _UNAUTHENTICATED
        return self.path_contains in path


class _NotFound(WslarkbotError):
    """No route for the request (answered 404)."""


def _parse_json(raw: bytes) -> tuple[Any, bool]:
    """``(value, ok)``: an empty body is ``(None, True)``; a body that is not JSON is ``(None, False)``."""
    if not raw:
        return None, True
    try:
        return json.loads(raw), True
    except ValueError:
        return None, False


class OpenAPIState:
    """Feishu's OpenAPI rules and data. Thread-safe: one lock guards everything; readers may be any thread.

    Args:
        clock: epoch seconds for token / card-token expiry, ``uuid`` windows and message age.
        app_rate_limit: messaging requests per second per app before HTTP 429.
        patch_qps: PATCHes per second per message before 230020.
        monotonic: the clock of the per-second rate limits.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        app_rate_limit: int = 50,
        patch_qps: int = 5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._app_rate_limit = app_rate_limit
        self._cond = threading.Condition()
        self._apps: dict[str, _App] = {}
        self._tokens: dict[str, _Token] = {}
        self._injections: list[_Injection] = []
        self._calls: list[RecordedCall] = []
        self._store = MessageStore(
            self._throttle_app, self._tenant_key, clock=clock, monotonic=monotonic, patch_qps=patch_qps
        )
        self._extras = ExtrasStore(self._store, clock)
        self._cardkit = CardKitStore(monotonic)
        self._store.check_card = lambda card: check_card(card, self._cardkit.get)

    # -- configuration and injection ------------------------------------------------------------------

    def add_app(self, app_id: str, app_secret: str, tenant_key: str = "736588c9260f175e") -> None:
        """Register a custom app that may fetch tokens."""
        with self._cond:
            self._apps[app_id] = _App(app_id, app_secret, tenant_key)

    def add_store_app(self, app_id: str, app_secret: str, tenants: Iterable[str]) -> None:
        """Register a store (marketplace) app installed by ``tenants``: tokens need an app_ticket
        (:meth:`issue_app_ticket`), tenant tokens are per tenant."""
        keys = frozenset(tenants)
        with self._cond:
            self._apps[app_id] = _App(app_id, app_secret, min(keys), store=True, tenants=keys)

    def issue_app_ticket(self, app_id: str) -> str:
        """A new app_ticket for a store app (as the hourly ``app_ticket`` event carries); the one before it
        stays valid too."""
        ticket = secrets.token_hex(16)
        with self._cond:
            app = self._apps[app_id]
            app.tickets = [*app.tickets[-1:], ticket]
        return ticket

    #: called ``(app_id, ticket)`` when an app asks for a ticket resend, on the server's thread with the
    #: state locked (so it must not block): schedule the ``app_ticket`` event's push from here
    ticket_sink: Callable[[str, str], None] | None = None

    def issue_card_token(
        self, app_id: str | None = None, message_id: str | None = None, token: str | None = None
    ) -> str:
        """Register a ``c-...`` card token as a card callback carries: valid 30 min, 2 delayed updates.

        Pass ``token`` to register one generated elsewhere (e.g. by the event simulator); a delayed
        update through a token bound to ``message_id`` appends to that message's content history.
        """
        token = token or "c-" + secrets.token_hex(20)
        with self._cond:
            self._store.add_card_token(token, app_id, message_id)
        return token

    def add_message(
        self,
        message_id: str,
        app_id: str,
        msg_type: str,
        content: Any,
        chat_id: str = "oc_fake",
        thread_id: str | None = None,
    ) -> StoredMessage:
        """Seed a message (e.g. a card the app sent earlier) so it can be replied to or patched."""
        text = content if isinstance(content, str) else json.dumps(content)
        msg = StoredMessage(
            message_id, app_id, msg_type, chat_id, [text], int(self._clock() * 1000), thread_id=thread_id
        )
        with self._cond:
            self._store.messages[message_id] = msg
        return msg

    def add_chat(
        self, chat_id: str, info: Mapping[str, Any], members: Iterable[Mapping[str, Any]] = ()
    ) -> None:
        """Seed a chat the app is in: ``info`` is what chat info answers; each member has ``name``,
        ``tenant_key`` and its ids (``open_id``, ``user_id``, ``union_id``)."""
        with self._cond:
            self._extras.chats[chat_id] = {"chat_id": chat_id, **info}
            self._extras.members[chat_id] = [dict(m) for m in members]

    def add_user(self, user: Mapping[str, Any]) -> None:
        """Seed a user (``open_id``, ``user_id``, ``union_id``, ``name``...) for user info and urgent."""
        with self._cond:
            self._extras.users[str(user["open_id"])] = dict(user)

    def add_resource(
        self, key: str, content: bytes, content_type: str, filename: str, app_id: str = ""
    ) -> None:
        """Seed an image (``img_...``) or file (``file_...``) a message may carry, for downloads."""
        with self._cond:
            self._extras.add_upload(key, app_id, content, content_type, filename)

    def card_entity(self, card_id: str) -> CardEntity | None:
        """A CardKit card entity (its current card, last sequence and update history), or None."""
        with self._cond:
            return self._cardkit.get(card_id)

    @property
    def extras(self) -> ExtrasStore:
        """Uploads, reactions, recalled messages and urgent calls (read them after the calls returned)."""
        return self._extras

    def inject_error(
        self, code: int, msg: str, http_status: int = 400, path_contains: str | None = None, count: int = 1
    ) -> None:
        """Answer the next ``count`` matching requests with ``{"code": code, "msg": msg}``.

        ``path_contains=None`` matches every path except the token endpoint.
        """
        self._inject(_Injection("error", count, path_contains, code, msg, http_status))

    def inject_rate_limit(
        self, count: int = 1, reset: float = 0.05, path_contains: str | None = None
    ) -> None:
        """Answer the next ``count`` matching requests with HTTP 429 / 99991400 and ``reset``."""
        self._inject(
            _Injection(
                "rate", count, path_contains, CODE_RATE_LIMIT, "request trigger frequency limit", 429, reset
            )
        )

    def inject_token_invalid(self, count: int = 1) -> None:
        """Answer the next ``count`` authorised calls with 99991663 and revoke the token they used."""
        self._inject(
            _Injection("token", count, None, CODE_TOKEN_INVALID, "Invalid access token for authorization")
        )

    def _inject(self, injection: _Injection) -> None:
        with self._cond:
            self._injections.append(injection)

    # -- inspection ---------------------------------------------------------------------------------

    @property
    def calls(self) -> list[RecordedCall]:
        """A snapshot of every request received, in arrival order."""
        with self._cond:
            return list(self._calls)

    @property
    def messages(self) -> dict[str, StoredMessage]:
        """A snapshot of the message store, by message_id."""
        with self._cond:
            return dict(self._store.messages)

    def calls_to(self, path_contains: str, method: str | None = None) -> list[RecordedCall]:
        """Recorded calls whose path contains ``path_contains`` (and, if given, with ``method``)."""
        return [c for c in self.calls if path_contains in c.path and (method is None or c.method == method)]

    def wait_for_calls(
        self,
        match: str | Callable[[RecordedCall], bool],
        count: int = 1,
        timeout: float = 5.0,
        *,
        answered: bool = True,
    ) -> list[RecordedCall]:
        """Block until ``count`` calls match (a path substring or a predicate), then return them all.

        With ``answered=True`` only calls already answered count. Raises ``TimeoutError`` otherwise.
        """

        def pred(c: RecordedCall) -> bool:
            ok = match in c.path if isinstance(match, str) else match(c)
            return ok and (c.status is not None or not answered)

        with self._cond:
            if not self._cond.wait_for(lambda: sum(map(pred, self._calls)) >= count, timeout):
                raise TimeoutError(f"fewer than {count} calls matching {match!r} within {timeout} s")
            return [c for c in self._calls if pred(c)]

    # -- requests -----------------------------------------------------------------------------------

    def record(self, request: FakeRequest) -> RecordedCall:
        """Record an arriving request, unanswered (``wait_for_calls(..., answered=False)`` sees it)."""
        body, _ = _parse_json(request.body)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "authorization" in headers:
            bearer = headers["authorization"].startswith("Bearer ")
            headers["authorization"] = "Bearer ***" if bearer else "***"
        call = RecordedCall(request.method, request.path, dict(request.query), body, headers)
        with self._cond:
            self._calls.append(call)
            self._cond.notify_all()
        return call

    def answer(self, request: FakeRequest, call: RecordedCall) -> Answer:
        """Apply Feishu's rules to ``request`` (recorded as ``call``): update the state, say what to send."""
        log_id = time.strftime("%Y%m%d%H%M%S", time.gmtime(self._clock())) + secrets.token_hex(8).upper()
        headers = {"X-Tt-Logid": log_id}
        with self._cond:
            try:
                content_type = request.header("Content-Type")
                if content_type.lower().startswith("multipart/"):
                    body, parts = None, parse_multipart(content_type, request.body)
                else:
                    body, ok = _parse_json(request.body)
                    parts = {}
                    if not ok:
                        raise OpenAPIFailure(CODE_VALIDATION, "request body is not JSON")
                result = self._dispatch(request, call, body, parts)
                if isinstance(result, Download):
                    answer = Answer(200, None, headers, 0, file=result)
                else:
                    answer = Answer(200, result, headers, int(result.get("code", 0)))
                    data = result.get("data")
                    call.answer_data = data if isinstance(data, dict) else None
            except OpenAPIFailure as fail:
                error = {"code": fail.code, "msg": fail.msg, "error": {"log_id": log_id}}
                answer = Answer(fail.status, error, {**fail.headers, **headers}, fail.code)
            except _NotFound:
                answer = Answer(404, None, headers, -1)
            call.status, call.code = answer.status, answer.code
            self._cond.notify_all()
        return answer

    def _dispatch(
        self, request: FakeRequest, call: RecordedCall, body: Any, parts: Mapping[str, Part]
    ) -> dict[str, Any] | Download:
        """Route one request; runs under the state lock; raises :class:`OpenAPIFailure` for error answers."""
        path, method = request.path, request.method
        for inj in self._injections:
            if inj.kind != "token" and inj.remaining > 0 and inj.matches(path):
                inj.remaining -= 1
                if inj.kind == "rate":
                    raise OpenAPIFailure(
                        inj.code,
                        inj.msg,
                        429,
                        {
                            "x-ogw-ratelimit-limit": str(self._app_rate_limit),
                            "x-ogw-ratelimit-reset": str(inj.reset),
                        },
                    )
                raise OpenAPIFailure(inj.code, inj.msg, inj.http_status)
        if path in _UNAUTHENTICATED and method == "POST":
            return self._token_endpoint(path, body, call)
        m = re.fullmatch(r"/open-apis/im/v1/messages(?:/([^/]+))?(/reply)?", path)
        target, reply = (m.group(1), m.group(2)) if m else (None, None)
        handler: Callable[..., dict[str, Any]]
        args: tuple[Any, ...]
        if m and method == "POST" and not target:
            handler, args = self._store.create, (request.query, body)
        elif m and method == "POST" and target and reply:
            handler, args = self._store.reply, (target, body)
        elif m and method == "PATCH" and target and not reply:
            handler, args = self._store.patch, (target, body)
        elif m and method == "GET" and target and not reply:
            handler, args = self._store.read, (target,)
        elif path == "/open-apis/interactive/v1/card/update" and method == "POST":
            handler, args = self._store.card_update, (body,)
        else:
            handler, args = self._route_extras(request, body, parts)
        return handler(self._authorise(request.header("Authorization"), call).app_id, *args)

    def _route_extras(
        self, request: FakeRequest, body: Any, parts: Mapping[str, Part]
    ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """The endpoints of :mod:`.openapi_extras` (uploads, resources, reactions, chats, users...)."""
        path, method, query, x, ck = request.path, request.method, request.query, self._extras, self._cardkit
        msg = r"/open-apis/im/v1/messages/([^/]+)"
        card = r"/open-apis/cardkit/v1/cards/([^/]+)"
        routes: list[tuple[str, str, Callable[..., Any], Callable[[re.Match[str]], tuple[Any, ...]]]] = [
            ("POST", r"/open-apis/im/v1/images", x.upload, lambda m: ("image", parts)),
            ("POST", r"/open-apis/im/v1/files", x.upload, lambda m: ("file", parts)),
            ("GET", msg + r"/resources/([^/]+)", x.download, lambda m: (m[1], m[2], query)),
            ("DELETE", msg, x.recall, lambda m: (m[1],)),
            ("POST", msg + r"/forward", x.forward, lambda m: (m[1], query, body)),
            ("POST", msg + r"/reactions", x.add_reaction, lambda m: (m[1], body)),
            ("GET", msg + r"/reactions", x.list_reactions, lambda m: (m[1], query)),
            ("DELETE", msg + r"/reactions/([^/]+)", x.remove_reaction, lambda m: (m[1], m[2])),
            ("PATCH", msg + r"/urgent_(app|sms|phone)", x.urgent_call, lambda m: (m[1], m[2], query, body)),
            ("GET", r"/open-apis/im/v1/chats/([^/]+)", x.chat, lambda m: (m[1],)),
            ("GET", r"/open-apis/im/v1/chats/([^/]+)/members", x.chat_members, lambda m: (m[1], query)),
            ("GET", r"/open-apis/contact/v3/users/([^/]+)", x.user, lambda m: (m[1], query)),
            ("POST", r"/open-apis/cardkit/v1/cards", ck.create, lambda m: (body,)),
            ("PUT", card, ck.update, lambda m: (m[1], body)),
            ("PATCH", card + r"/settings", ck.settings, lambda m: (m[1], body)),
            ("PUT", card + r"/elements/([^/]+)/content", ck.stream_text, lambda m: (m[1], m[2], body)),
        ]
        for want, pattern, handler, args in routes:
            m = re.fullmatch(pattern, path)
            if m and method == want:
                return handler, args(m)
        raise _NotFound

    def _throttle_app(self, app_id: str) -> None:
        app = self._apps[app_id]
        now = self._monotonic()
        while app.sent and now - app.sent[0] >= 1.0:
            app.sent.popleft()
        if len(app.sent) >= self._app_rate_limit:
            reset = max(1, round(1.0 - (now - app.sent[0])))
            raise OpenAPIFailure(
                CODE_RATE_LIMIT,
                "request trigger frequency limit",
                429,
                {"x-ogw-ratelimit-limit": str(self._app_rate_limit), "x-ogw-ratelimit-reset": str(reset)},
            )
        app.sent.append(now)

    def _tenant_key(self, app_id: str) -> str:
        app = self._apps.get(app_id)
        return app.tenant_key if app else ""

    # -- token --------------------------------------------------------------------------------------

    def _token_endpoint(self, path: str, body: Any, call: RecordedCall) -> dict[str, Any]:
        """The five unauthenticated auth endpoints (docs/openapi.md "Tokens")."""
        if not isinstance(body, dict):
            raise OpenAPIFailure(CODE_VALIDATION, "a JSON object body is required")
        if path == STORE_TENANT_TOKEN_PATH:  # identified by its app_access_token, not id + secret
            app_token = self._tokens.get(str(body.get("app_access_token")))
            if app_token is None or app_token.kind != "app" or app_token.expires_at <= self._clock():
                raise OpenAPIFailure(CODE_TOKEN_INVALID, "app_access_token is invalid")
            owner = self._apps[app_token.app_id]
            call.app_id = owner.app_id
            if not owner.store:
                raise OpenAPIFailure(CODE_APP_TYPE, "a self-built app uses tenant_access_token/internal")
            tenant = str(body.get("tenant_key", ""))
            if tenant not in owner.tenants:
                raise OpenAPIFailure(CODE_TENANT_UNKNOWN, "the tenant has not installed the app")
            return self._grant(owner, "tenant", tenant)
        app = self._apps.get(str(body.get("app_id")))
        if app is None:
            raise OpenAPIFailure(CODE_APP_UNKNOWN, "invalid param: app_id")
        call.app_id = app.app_id
        if not secrets.compare_digest(str(body.get("app_secret", "")).encode(), app.secret.encode()):
            raise OpenAPIFailure(CODE_BAD_SECRET, "app secret invalid")
        if path == TICKET_RESEND_PATH:
            if not app.store:
                raise OpenAPIFailure(CODE_APP_TYPE, "only store apps receive app_tickets")
            ticket = secrets.token_hex(16)
            app.tickets = [*app.tickets[-1:], ticket]
            if self.ticket_sink is not None:
                self.ticket_sink(app.app_id, ticket)
            return {"code": 0, "msg": "ok"}
        if path == STORE_APP_TOKEN_PATH:
            if not app.store:
                raise OpenAPIFailure(CODE_APP_TYPE, "a self-built app uses app_access_token/internal")
            if str(body.get("app_ticket", "")) not in app.tickets:
                raise OpenAPIFailure(CODE_BAD_TICKET, "app_ticket is invalid")
            return self._grant(app, "app", "")
        if app.store:
            raise OpenAPIFailure(CODE_APP_TYPE, "a store app needs its app_ticket (app_access_token)")
        if path == APP_TOKEN_PATH:
            return self._grant(app, "app", "")
        return self._grant(app, "tenant", app.tenant_key)

    def _grant(self, app: _App, kind: str, tenant: str) -> dict[str, Any]:
        """The current token of ``kind`` for ``(app, tenant)``, or a new one (< 30 min left, or revoked)."""
        now = self._clock()
        current = app.tokens.get((kind, tenant))
        revoked = current is not None and current.value not in self._tokens
        if current is None or revoked or current.expires_at - now < TOKEN_RENEW_WINDOW:
            app.issued += 1
            prefix = "t-" if kind == "tenant" else "a-"
            current = _Token(
                prefix + secrets.token_hex(20), app.app_id, app.issued, now + TOKEN_LIFETIME, tenant, kind
            )
            app.tokens[(kind, tenant)] = self._tokens[current.value] = current
            if kind == "tenant" and not app.store:
                app.current = current
        field_name = "tenant_access_token" if kind == "tenant" else "app_access_token"
        return {"code": 0, "msg": "ok", field_name: current.value, "expire": int(current.expires_at - now)}

    def _authorise(self, header: str, call: RecordedCall) -> _Token:
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise OpenAPIFailure(CODE_NEED_TOKEN, "Missing access token for authorization")
        value = header[7:].strip()
        if not value.startswith(("t-", "u-")):
            raise OpenAPIFailure(CODE_TOKEN_FORMAT, "access token must start with t- or u-")
        token = self._tokens.get(value)
        if token is None or token.kind != "tenant" or token.expires_at <= self._clock():
            raise OpenAPIFailure(CODE_TOKEN_INVALID, "Invalid access token for authorization")
        call.app_id, call.token_seq, call.tenant_key = token.app_id, token.seq, token.tenant_key
        for inj in self._injections:
            if inj.kind == "token" and inj.remaining > 0:
                inj.remaining -= 1
                del self._tokens[value]  # revoked: the next token request issues a fresh one
                raise OpenAPIFailure(inj.code, inj.msg)
        return token
