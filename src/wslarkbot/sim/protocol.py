"""The simulator's core, without I/O: how Feishu builds a webhook request and how it judges the answer.

* :func:`build_request` turns a payload into the exact bytes and headers Feishu sends (protocol.md §1-§3,
  §11): compact UTF-8 JSON, ``{"encrypt": ...}`` with a fresh IV when the app has an Encrypt Key, and the
  ``X-Lark-*`` signature headers except on url_verification.
* :func:`judge_challenge` and :func:`judge_callback` apply Feishu's rules to a response (§4, §6) and
  return the error Feishu would show.
* The result types record what happened; :class:`~wslarkbot.sim.feishu.FeishuSimulator` does the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .. import crypto
from .app import SimApp

__all__ = [
    "CHALLENGE_ERROR",
    "CONTENT_TYPE",
    "ERR_BAD_BODY",
    "ERR_BAD_CARD",
    "ERR_HTTP_STATUS",
    "ERR_TIMEOUT",
    "USER_AGENT",
    "CallbackResult",
    "ChallengeResult",
    "DeliveryResult",
    "OutgoingRequest",
    "RequestKind",
    "SentRequest",
    "build_request",
    "encode_json",
    "judge_callback",
    "judge_challenge",
]

CONTENT_TYPE = "application/json;charset=utf-8"
USER_AGENT = "Go-http-client/1.1"
#: What the developer console shows when the challenge is not echoed in time (protocol.md §4).
CHALLENGE_ERROR = "Challenge code 没有返回"
# Client-side error codes of a card callback (protocol.md §6a, [FS-CARD-CB] error table).
ERR_TIMEOUT = 200341  # no answer within 3 s
ERR_HTTP_STATUS = 200671  # not HTTP 200 (3xx included: redirects are not followed)
ERR_BAD_BODY = 200672  # body is not the documented JSON (toast included)
ERR_BAD_CARD = 200673  # the card in the body is invalid

TOAST_TYPES = frozenset({"info", "success", "error", "warning"})
CARD_TYPES = frozenset({"raw", "template"})

#: ``event``/``callback``: v2 envelope or v1 event, encrypted and sha256-signed when the app has a key.
#: ``url_verification``: encrypted when the app has a key, never signed.
#: ``legacy_card``: flat body, never encrypted, sha1-signed with the Verification Token.
#: ``legacy_card_verification``: the legacy card URL's own challenge, plain and unsigned.
RequestKind = Literal["event", "callback", "url_verification", "legacy_card", "legacy_card_verification"]


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON as Feishu sends it: no spaces, UTF-8 (not ``\\u`` escapes)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class OutgoingRequest:
    """The bytes of one HTTP attempt. ``headers`` are exactly the ones Feishu sets (plus Host/Length)."""

    headers: dict[str, str]
    body: bytes


def build_request(
    app: SimApp,
    payload: Mapping[str, Any],
    *,
    kind: RequestKind,
    timestamp: str,
    nonce: str,
    request_id: str,
    sign_without_encrypt_key: bool = False,
    iv: bytes | None = None,
) -> OutgoingRequest:
    """Build one attempt. Each attempt gets its own ``timestamp``, ``nonce``, ``request_id`` and IV.

    Args:
        kind: see :data:`RequestKind`.
        timestamp: ``X-Lark-Request-Timestamp``, Unix seconds as a decimal string.
        sign_without_encrypt_key: whether to send signature headers when the app has no Encrypt Key
            (unknown what Feishu does; the signature then uses an empty key, protocol.md §11).
        iv: a fixed IV, for tests only; a fresh random one by default.
    """
    plain = encode_json(payload)
    headers = {
        "Content-Type": CONTENT_TYPE,
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "gzip",
        "X-Request-Id": request_id,
    }
    legacy = kind in ("legacy_card", "legacy_card_verification")
    if app.encrypt_key and not legacy:
        body = encode_json({"encrypt": crypto.encrypt(plain, app.encrypt_key, iv=iv)})
    else:
        body = plain
    if kind == "legacy_card":
        signature = crypto.card_signature(timestamp, nonce, app.verification_token, body)
    elif kind in ("event", "callback") and (app.encrypt_key or sign_without_encrypt_key):
        signature = crypto.event_signature(timestamp, nonce, app.encrypt_key or "", body)
    else:
        return OutgoingRequest(headers, body)
    headers["X-Lark-Request-Timestamp"] = timestamp
    headers["X-Lark-Request-Nonce"] = nonce
    headers["X-Lark-Signature"] = signature
    return OutgoingRequest(headers, body)


@dataclass
class SentRequest:
    """One HTTP attempt, as sent and as answered. ``payload`` is the plaintext (kept in memory only).

    ``status`` is ``None`` when no response came (``error`` says why: ``"timeout"`` or a connection
    error); ``elapsed`` is seconds from sending to the end of the response body or the failure.
    """

    kind: RequestKind
    url: str
    key: str | None
    attempt: int
    headers: dict[str, str]
    body: bytes = field(repr=False)
    payload: Mapping[str, Any] = field(repr=False)
    sent_at: float
    status: int | None = None
    error: str | None = None
    elapsed: float | None = None
    response_body: bytes | None = field(default=None, repr=False)

    @property
    def request_id(self) -> str:
        return self.headers["X-Request-Id"]


@dataclass
class ChallengeResult:
    """Outcome of a url_verification: ``ok`` only for HTTP 200 + the same ``challenge`` within 1 s."""

    ok: bool
    status: int | None
    elapsed: float
    body: bytes | None = field(repr=False)
    error: str | None
    challenge: str = ""


@dataclass
class DeliveryResult:
    """Outcome of one event: every attempt in order, and whether it was delivered or dropped.

    ``key`` is the ``event_id``/``uuid`` every attempt carried. ``duplicates`` holds the deliveries of
    injected duplicates (protocol.md §5).
    """

    key: str | None
    attempts: list[SentRequest] = field(default_factory=list)
    delivered: bool = False
    duplicates: list[DeliveryResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.delivered

    @property
    def dropped(self) -> bool:
        """True when every attempt failed and Feishu gave up (after the last retry)."""
        return not self.delivered and bool(self.attempts)

    @property
    def retries(self) -> int:
        return max(0, len(self.attempts) - 1)


@dataclass
class CallbackResult:
    """Outcome of a callback (card action, URL preview): Feishu never retries these.

    ``error_code`` is the client error Feishu would show (:data:`ERR_TIMEOUT`, :data:`ERR_HTTP_STATUS`,
    :data:`ERR_BAD_BODY`, :data:`ERR_BAD_CARD`) or ``None``; ``response`` is the decoded JSON body.
    """

    ok: bool
    status: int | None
    response: Any
    error_code: int | None
    elapsed: float
    error: str | None = None
    attempt: SentRequest | None = field(default=None, repr=False)


def judge_challenge(challenge: str, status: int | None, body: bytes | None) -> str | None:
    """``None`` if the answer passes the url_verification check (HTTP 200, JSON echoing the challenge).

    The 1 s limit is enforced by the caller's deadline; a late answer never gets here.
    """
    if status != 200 or body is None:
        return CHALLENGE_ERROR
    try:
        answer = json.loads(body)
    except ValueError:
        return CHALLENGE_ERROR
    if not isinstance(answer, dict) or answer.get("challenge") != challenge:
        return CHALLENGE_ERROR
    return None


def _toast_error(toast: Any) -> str | None:
    if not isinstance(toast, dict):
        return "toast must be an object"
    if toast.get("type") not in TOAST_TYPES:
        return "toast.type must be one of info, success, error, warning"
    i18n = toast.get("i18n")
    if i18n is not None and not (isinstance(i18n, dict) and all(isinstance(v, str) for v in i18n.values())):
        return "toast.i18n must map locales to strings"
    if not isinstance(toast.get("content"), str) and not i18n:
        return "toast needs content or i18n"
    return None


def _card_error(card: Any) -> str | None:
    if not isinstance(card, dict):
        return "card must be an object"
    if card.get("type") not in CARD_TYPES:
        return "card.type must be raw or template"
    data = card.get("data")
    if not isinstance(data, dict) or not data:
        return "card.data must be a non-empty object"
    if card["type"] == "template" and not isinstance(data.get("template_id"), str):
        return "a template card needs data.template_id"
    return None


def judge_callback(
    status: int | None, body: bytes | None, *, legacy: bool = False
) -> tuple[int | None, Any, str | None]:
    """Judge a callback answer that arrived in time. Returns ``(error_code, decoded_body, reason)``.

    New-style (``card.action.trigger``, ``url.preview.get``): HTTP 200 with a JSON object; optional
    ``toast`` {type in info|success|error|warning, content, i18n?} (a bad toast is 200672) and ``card``
    {type raw|template, data} (a bad card is 200673); ``{}`` is valid; other keys are ignored.
    Legacy (``card.action.trigger_v1``): HTTP 200 with an empty body or any JSON object (a toast, or the
    card JSON itself); only the toast is checked.
    """
    if status != 200:
        return ERR_HTTP_STATUS, None, f"HTTP {status}, expected 200"
    raw = (body or b"").strip()
    if legacy and not raw:
        return None, None, None
    try:
        answer = json.loads(raw)
    except ValueError:
        return ERR_BAD_BODY, None, "body is not JSON"
    if not isinstance(answer, dict):
        return ERR_BAD_BODY, answer, "body is not a JSON object"
    if "toast" in answer:
        reason = _toast_error(answer["toast"])
        if reason:
            return ERR_BAD_BODY, answer, reason
    if not legacy and "card" in answer:
        reason = _card_error(answer["card"])
        if reason:
            return ERR_BAD_CARD, answer, reason
    if not legacy and "inline" in answer and not isinstance(answer["inline"], dict):
        return ERR_BAD_BODY, answer, "inline must be an object"
    return None, answer, None
