"""A fake Feishu OpenAPI on 127.0.0.1, for tests of bots that call Feishu (protocol.md §8, §11).

It runs an aiohttp server on its own :class:`~wslarkbot._background.BackgroundLoop` thread, so sync code that
blocks on HTTP and asyncio tests can both use it::

    with FakeOpenAPI() as api:
        api.add_app("cli_test", "secret")
        client = OpenAPIClient("cli_test", "secret", host=api.url)
        client.send_text("ou_1", "hi")
        [call] = api.wait_for_calls("/im/v1/messages")

What it models: tenant tokens (7200 s; a new one only when < 30 min remain, the old one stays valid; wrong
secret -> error), ``Authorization: Bearer`` (missing -> 99991661, unknown/expired -> 99991663), message
create (``receive_id_type`` required, ``uuid`` idempotency for 1 h), reply (``reply_in_thread``, threads),
PATCH (interactive only, 14 days, 5 QPS per message -> 230020), ``interactive/v1/card/update`` (card token
30 min, 2 uses), 50 requests/s per app on messaging -> HTTP 429 99991400 with ``x-ogw-ratelimit-*``
headers, business errors as HTTP 400 ``{"code","msg"}``, ``X-Tt-Logid`` on every response, and unknown
paths as a plain-text 404. Codes that protocol.md does not fix are the ``CODE_*`` constants below.

Time: token and card-token expiry, ``uuid`` windows and the 14-day PATCH rule use the injectable ``clock``;
the per-second rate limits use ``time.monotonic`` (they are about real request bursts).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from .._background import BackgroundLoop

__all__ = ["FakeOpenAPI", "RecordedCall", "StoredMessage"]

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
TOKEN_LIFETIME = 7200
TOKEN_RENEW_WINDOW = 1800  # a new token is issued only when less than 30 min remain
CARD_TOKEN_LIFETIME = 1800
CARD_TOKEN_USES = 2
UUID_WINDOW = 3600
PATCH_MAX_AGE = 14 * 86400
CONTENT_LIMITS = {"text": 150 * 1024, "post": 30 * 1024, "interactive": 30 * 1024}
MSG_TYPES = frozenset({"text", "post", "image", "file", "audio", "media", "sticker", "interactive",
                       "share_chat", "share_user", "system"})
RECEIVE_ID_TYPES = frozenset({"open_id", "user_id", "union_id", "email", "chat_id"})

CODE_NEED_TOKEN = 99991661
CODE_TOKEN_INVALID = 99991663
CODE_TOKEN_FORMAT = 99991671
CODE_RATE_LIMIT = 99991400
CODE_VALIDATION = 99992402  # "field validation failed"
CODE_BAD_PARAM = 230001
CODE_FREQUENCY = 230020
CODE_TOO_LONG = 230025
CODE_TOO_OLD = 230031
CODE_APP_UNKNOWN = 10003
CODE_BAD_SECRET = 10014
CODE_CARD_TOKEN = 230001  # chosen by the fake: the card/update token is unknown, expired or used up


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
    status: int | None = None  # filled in when answered
    code: int | None = None


@dataclass
class StoredMessage:
    """A message sent by an app. ``contents`` is the history of ``content`` strings (PATCH appends)."""

    message_id: str
    app_id: str
    msg_type: str
    chat_id: str
    contents: list[str]
    create_time: int  # ms
    receive_id: str | None = None
    receive_id_type: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    thread_id: str | None = None

    @property
    def content(self) -> Any:
        """The latest content, decoded."""
        return json.loads(self.contents[-1])


@dataclass
class _Token:
    value: str
    app_id: str
    seq: int
    expires_at: float


@dataclass
class _App:
    app_id: str
    secret: str
    tenant_key: str
    current: _Token | None = None
    issued: int = 0
    sent: deque[float] = field(default_factory=deque)


@dataclass
class _CardToken:
    app_id: str | None
    message_id: str | None
    expires_at: float
    uses: int = 0


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
            return path != TOKEN_PATH
        return self.path_contains in path


class _Fail(Exception):
    def __init__(self, code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status, self.headers = code, msg, status, headers or {}


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class FakeOpenAPI:
    """Feishu's OpenAPI, faked. Thread-safe: the server runs on its own loop; tests read from any thread.

    Args:
        clock: epoch seconds for token / card-token expiry, ``uuid`` windows and message age.
        app_rate_limit: messaging requests per second per app before HTTP 429.
        patch_qps: PATCHes per second per message before 230020.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, app_rate_limit: int = 50,
                 patch_qps: int = 5, host: str = "127.0.0.1") -> None:
        self._clock = clock
        self._app_rate_limit = app_rate_limit
        self._patch_qps = patch_qps
        self._host = host
        self._cond = threading.Condition()
        self._apps: dict[str, _App] = {}
        self._tokens: dict[str, _Token] = {}
        self._card_tokens: dict[str, _CardToken] = {}
        self._uuids: dict[tuple[str, str], tuple[str, float]] = {}
        self._patches: dict[str, deque[float]] = {}
        self._injections: list[_Injection] = []
        self._pauses: list[tuple[str, asyncio.Event]] = []
        self._calls: list[RecordedCall] = []
        self._messages: dict[str, StoredMessage] = {}
        self._bg: BackgroundLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: pass it as the client's ``host``."""
        if not self.port:
            raise RuntimeError("FakeOpenAPI is not started")
        return f"http://{self._host}:{self.port}"

    def start(self) -> FakeOpenAPI:
        """Start serving on a free port (blocks until listening)."""
        if self._bg is not None:
            return self
        self._bg = BackgroundLoop(name="fake-openapi")
        self.port = self._bg.run(self._start(), timeout=10)
        return self

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, 0)
        await site.start()
        return int(self._runner.addresses[0][1])

    def stop(self) -> None:
        """Release paused requests, stop the server and its thread."""
        if self._bg is None:
            return
        self.resume()
        if self._runner is not None:
            self._bg.run(self._runner.cleanup(), timeout=10)
        self._bg.stop()
        self._bg = None

    def __enter__(self) -> FakeOpenAPI:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- configuration and injection ------------------------------------------------------------------

    def add_app(self, app_id: str, app_secret: str, tenant_key: str = "736588c9260f175e") -> None:
        """Register a custom app that may fetch tokens."""
        with self._cond:
            self._apps[app_id] = _App(app_id, app_secret, tenant_key)

    def issue_card_token(self, app_id: str | None = None, message_id: str | None = None,
                         token: str | None = None) -> str:
        """Register a ``c-...`` card token as a card callback carries: valid 30 min, 2 delayed updates.

        Pass ``token`` to register one generated elsewhere (e.g. by the event simulator); a delayed
        update through a token bound to ``message_id`` appends to that message's content history.
        """
        token = token or "c-" + secrets.token_hex(20)
        with self._cond:
            self._card_tokens[token] = _CardToken(app_id, message_id, self._clock() + CARD_TOKEN_LIFETIME)
        return token

    def add_message(self, message_id: str, app_id: str, msg_type: str, content: Any,
                    chat_id: str = "oc_fake", thread_id: str | None = None) -> StoredMessage:
        """Seed a message (e.g. a card the app sent earlier) so it can be replied to or patched."""
        text = content if isinstance(content, str) else json.dumps(content)
        msg = StoredMessage(message_id, app_id, msg_type, chat_id, [text], int(self._clock() * 1000),
                            thread_id=thread_id)
        with self._cond:
            self._messages[message_id] = msg
        return msg

    def inject_error(self, code: int, msg: str, http_status: int = 400, path_contains: str | None = None,
                     count: int = 1) -> None:
        """Answer the next ``count`` matching requests with ``{"code": code, "msg": msg}``.

        ``path_contains=None`` matches every path except the token endpoint.
        """
        self._inject(_Injection("error", count, path_contains, code, msg, http_status))

    def inject_rate_limit(self, count: int = 1, reset: float = 0.05,
                          path_contains: str | None = None) -> None:
        """Answer the next ``count`` matching requests with HTTP 429 / 99991400 and ``reset``."""
        self._inject(_Injection("rate", count, path_contains, CODE_RATE_LIMIT,
                                "request trigger frequency limit", 429, reset))

    def inject_token_invalid(self, count: int = 1) -> None:
        """Answer the next ``count`` authorised calls with 99991663 and revoke the token they used."""
        self._inject(_Injection("token", count, None, CODE_TOKEN_INVALID,
                                "Invalid access token for authorization"))

    def _inject(self, injection: _Injection) -> None:
        with self._cond:
            self._injections.append(injection)

    def pause(self, path_contains: str) -> None:
        """Hold matching requests (recorded, not answered) until :meth:`resume`."""
        with self._cond:
            self._pauses.append((path_contains, asyncio.Event()))

    def resume(self) -> None:
        """Release every held request."""
        with self._cond:
            events = [event for _, event in self._pauses]
            self._pauses.clear()
        if self._bg is not None:
            for event in events:
                self._bg.loop.call_soon_threadsafe(event.set)

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
            return dict(self._messages)

    def calls_to(self, path_contains: str, method: str | None = None) -> list[RecordedCall]:
        """Recorded calls whose path contains ``path_contains`` (and, if given, with ``method``)."""
        return [c for c in self.calls if path_contains in c.path and (method is None or c.method == method)]

    def wait_for_calls(self, match: str | Callable[[RecordedCall], bool], count: int = 1,
                       timeout: float = 5.0, *, answered: bool = True) -> list[RecordedCall]:
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

    # -- HTTP ---------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = ValueError
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "authorization" in headers:
            bearer = headers["authorization"].startswith("Bearer ")
            headers["authorization"] = "Bearer ***" if bearer else "***"
        call = RecordedCall(request.method, request.path, dict(request.query),
                            None if body is ValueError else body, headers)
        with self._cond:
            self._calls.append(call)
            self._cond.notify_all()
            held = [event for sub, event in self._pauses if sub in request.path]
        for event in held:
            await event.wait()
        log_id = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + secrets.token_hex(8).upper()
        try:
            with self._cond:
                if body is ValueError:
                    raise _Fail(CODE_VALIDATION, "request body is not JSON")
                status, answer = self._dispatch(request, call, body)
            response: web.StreamResponse = web.json_response(answer, status=status)
            code = int(answer.get("code", 0))
        except _Fail as fail:
            answer = {"code": fail.code, "msg": fail.msg, "error": {"log_id": log_id}}
            response = web.json_response(answer, status=fail.status, headers=fail.headers)
            code = fail.code
        except _NotFound:
            response, code = web.Response(status=404, text="404 page not found"), -1
        response.headers["X-Tt-Logid"] = log_id
        with self._cond:
            call.status, call.code = response.status, code
            self._cond.notify_all()
        return response

    def _dispatch(self, request: web.Request, call: RecordedCall, body: Any) -> tuple[int, dict[str, Any]]:
        """Route one request; runs under the state lock; raises :class:`_Fail` for error answers."""
        path, method = request.path, request.method
        for inj in self._injections:
            if inj.kind != "token" and inj.remaining > 0 and inj.matches(path):
                inj.remaining -= 1
                if inj.kind == "rate":
                    raise _Fail(inj.code, inj.msg, 429, {"x-ogw-ratelimit-limit": str(self._app_rate_limit),
                                                         "x-ogw-ratelimit-reset": str(inj.reset)})
                raise _Fail(inj.code, inj.msg, inj.http_status)
        if path == TOKEN_PATH and method == "POST":
            return 200, self._issue_token(body, call)
        m = re.fullmatch(r"/open-apis/im/v1/messages(?:/([^/]+))?(/reply)?", path)
        target, reply = (m.group(1), m.group(2)) if m else (None, None)
        handler: Callable[..., dict[str, Any]]
        args: tuple[Any, ...]
        if m and method == "POST" and not target:
            handler, args = self._create, (request.query, body)
        elif m and method == "POST" and target and reply:
            handler, args = self._reply, (target, body)
        elif m and method == "PATCH" and target and not reply:
            handler, args = self._patch, (target, body)
        elif m and method == "GET" and target and not reply:
            handler, args = self._read, (target,)
        elif path == "/open-apis/interactive/v1/card/update" and method == "POST":
            handler, args = self._card_update, (body,)
        else:
            raise _NotFound
        return 200, handler(self._authorise(request, call).app_id, *args)

    # -- token --------------------------------------------------------------------------------------

    def _issue_token(self, body: Any, call: RecordedCall) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _Fail(CODE_VALIDATION, "app_id and app_secret are required")
        app = self._apps.get(str(body.get("app_id")))
        if app is None:
            raise _Fail(CODE_APP_UNKNOWN, "invalid param: app_id")
        call.app_id = app.app_id
        if not secrets.compare_digest(str(body.get("app_secret", "")).encode(), app.secret.encode()):
            raise _Fail(CODE_BAD_SECRET, "app secret invalid")
        now = self._clock()
        current = app.current
        revoked = current is not None and current.value not in self._tokens
        if current is None or revoked or current.expires_at - now < TOKEN_RENEW_WINDOW:
            app.issued += 1
            current = _Token("t-" + secrets.token_hex(20), app.app_id, app.issued, now + TOKEN_LIFETIME)
            app.current = self._tokens[current.value] = current
        return {"code": 0, "msg": "ok", "tenant_access_token": current.value,
                "expire": int(current.expires_at - now)}

    def _authorise(self, request: web.Request, call: RecordedCall) -> _Token:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise _Fail(CODE_NEED_TOKEN, "Missing access token for authorization")
        value = header[7:].strip()
        if not value.startswith(("t-", "u-")):
            raise _Fail(CODE_TOKEN_FORMAT, "access token must start with t- or u-")
        token = self._tokens.get(value)
        if token is None or token.expires_at <= self._clock():
            raise _Fail(CODE_TOKEN_INVALID, "Invalid access token for authorization")
        call.app_id, call.token_seq = token.app_id, token.seq
        for inj in self._injections:
            if inj.kind == "token" and inj.remaining > 0:
                inj.remaining -= 1
                del self._tokens[value]  # revoked: the next token request issues a fresh one
                raise _Fail(inj.code, inj.msg)
        return token

    # -- messages -----------------------------------------------------------------------------------

    def _throttle_app(self, app_id: str) -> None:
        app = self._apps[app_id]
        now = time.monotonic()
        while app.sent and now - app.sent[0] >= 1.0:
            app.sent.popleft()
        if len(app.sent) >= self._app_rate_limit:
            reset = max(1, round(1.0 - (now - app.sent[0])))
            raise _Fail(CODE_RATE_LIMIT, "request trigger frequency limit", 429, {
                "x-ogw-ratelimit-limit": str(self._app_rate_limit), "x-ogw-ratelimit-reset": str(reset)})
        app.sent.append(now)

    @staticmethod
    def _content(body: Any, msg_type: str) -> str:
        content = body.get("content")
        if not isinstance(content, str):
            raise _Fail(CODE_VALIDATION, "field validation failed: content must be a JSON string")
        try:
            decoded = json.loads(content)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            raise _Fail(CODE_BAD_PARAM, "invalid content: not a JSON object")
        limit = CONTENT_LIMITS.get(msg_type)
        if limit is not None and len(content.encode()) > limit:
            raise _Fail(CODE_TOO_LONG, "the message content is too long")
        return content

    def _check_uuid(self, app_id: str, body: dict[str, Any]) -> StoredMessage | None:
        uuid = body.get("uuid")
        if uuid is None:
            return None
        if not isinstance(uuid, str) or not 0 < len(uuid) <= 50:
            raise _Fail(CODE_VALIDATION, "field validation failed: uuid")
        seen = self._uuids.get((app_id, uuid))
        if seen is not None and seen[1] > self._clock():
            return self._messages.get(seen[0])
        return None

    def _store(self, app_id: str, body: dict[str, Any], msg: StoredMessage) -> dict[str, Any]:
        self._messages[msg.message_id] = msg
        if isinstance(body.get("uuid"), str):
            self._uuids[(app_id, body["uuid"])] = (msg.message_id, self._clock() + UUID_WINDOW)
        return {"code": 0, "msg": "success", "data": self._view(msg)}

    def _message_fields(self, app_id: str, body: Any) -> tuple[dict[str, Any], str, str]:
        if not isinstance(body, dict):
            raise _Fail(CODE_VALIDATION, "field validation failed: body")
        msg_type = body.get("msg_type")
        if msg_type not in MSG_TYPES:
            raise _Fail(CODE_VALIDATION, "field validation failed: msg_type")
        self._throttle_app(app_id)
        return body, str(msg_type), self._content(body, str(msg_type))

    def _create(self, app_id: str, query: Any, body: Any) -> dict[str, Any]:
        receive_id_type = query.get("receive_id_type")
        if receive_id_type not in RECEIVE_ID_TYPES:
            raise _Fail(CODE_VALIDATION, "field validation failed: receive_id_type is required")
        body, msg_type, content = self._message_fields(app_id, body)
        receive_id = body.get("receive_id")
        if not isinstance(receive_id, str) or not receive_id:
            raise _Fail(CODE_VALIDATION, "field validation failed: receive_id")
        dup = self._check_uuid(app_id, body)
        if dup is not None:
            return {"code": 0, "msg": "success", "data": self._view(dup)}
        chat_id = receive_id if receive_id_type == "chat_id" else "oc_p2p_" + receive_id
        return self._store(app_id, body, StoredMessage(
            _new_id("om_"), app_id, msg_type, chat_id, [content], int(self._clock() * 1000),
            receive_id=receive_id, receive_id_type=receive_id_type))

    def _reply(self, app_id: str, message_id: str, body: Any) -> dict[str, Any]:
        body, msg_type, content = self._message_fields(app_id, body)
        dup = self._check_uuid(app_id, body)
        if dup is not None:
            return {"code": 0, "msg": "success", "data": self._view(dup)}
        parent = self._messages.get(message_id)  # replies to user messages the fake never saw are fine
        thread_id = parent.thread_id if parent else None
        if body.get("reply_in_thread") is True and thread_id is None:
            thread_id = _new_id("omt_")[:16]
            if parent is not None:
                parent.thread_id = thread_id
        root_id = (parent.root_id or parent.message_id) if parent else message_id
        return self._store(app_id, body, StoredMessage(
            _new_id("om_"), app_id, msg_type, parent.chat_id if parent else "oc_fake", [content],
            int(self._clock() * 1000), parent_id=message_id, root_id=root_id, thread_id=thread_id))

    def _get(self, message_id: str) -> StoredMessage:
        msg = self._messages.get(message_id)
        if msg is None:
            raise _Fail(CODE_BAD_PARAM, "invalid message_id")
        return msg

    def _patch(self, app_id: str, message_id: str, body: Any) -> dict[str, Any]:
        msg = self._get(message_id)
        if msg.msg_type != "interactive" or msg.app_id != app_id:
            raise _Fail(CODE_BAD_PARAM, "only interactive messages sent by this app can be updated")
        if self._clock() * 1000 - msg.create_time > PATCH_MAX_AGE * 1000:
            raise _Fail(CODE_TOO_OLD, "the message was sent more than 14 days ago")
        if not isinstance(body, dict):
            raise _Fail(CODE_VALIDATION, "field validation failed: body")
        content = self._content(body, "interactive")
        self._throttle_app(app_id)
        stamps = self._patches.setdefault(message_id, deque())
        now = time.monotonic()
        while stamps and now - stamps[0] >= 1.0:
            stamps.popleft()
        if len(stamps) >= self._patch_qps:
            raise _Fail(CODE_FREQUENCY, "frequency limit: 5 QPS per message")
        stamps.append(now)
        msg.contents.append(content)
        return {"code": 0, "data": {}, "msg": "ok"}

    def _read(self, app_id: str, message_id: str) -> dict[str, Any]:
        return {"code": 0, "msg": "success", "data": {"items": [self._view(self._get(message_id))]}}

    def _card_update(self, app_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("card"), dict):
            raise _Fail(CODE_VALIDATION, "field validation failed: token and card (an object) are required")
        ct = self._card_tokens.get(str(body.get("token")))
        if ct is None or ct.expires_at <= self._clock() or ct.uses >= CARD_TOKEN_USES:
            raise _Fail(CODE_CARD_TOKEN, "card token is unknown, expired or used up")
        ct.uses += 1
        if ct.message_id in self._messages:
            self._messages[ct.message_id].contents.append(json.dumps(body["card"], ensure_ascii=False))
        return {"code": 0, "msg": "ok", "data": {}}

    def _view(self, msg: StoredMessage) -> dict[str, Any]:
        app = self._apps.get(msg.app_id)
        view: dict[str, Any] = {
            "message_id": msg.message_id, "msg_type": msg.msg_type, "chat_id": msg.chat_id,
            "create_time": str(msg.create_time), "update_time": str(msg.create_time),
            "deleted": False, "updated": len(msg.contents) > 1,
            "sender": {"id": msg.app_id, "id_type": "app_id", "sender_type": "app",
                       "tenant_key": app.tenant_key if app else ""},
            "body": {"content": msg.contents[-1]},
        }
        for key in ("root_id", "parent_id", "thread_id"):
            if getattr(msg, key):
                view[key] = getattr(msg, key)
        if msg.parent_id:
            view["upper_message_id"] = msg.parent_id
        return view


class _NotFound(Exception):
    pass
