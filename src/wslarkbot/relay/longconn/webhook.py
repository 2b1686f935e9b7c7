"""A Feishu webhook for a gateway app: verify, decrypt, then hand the plaintext to a long-connection client.

The verification half (:func:`open_webhook`) and the answer mapping (:func:`http_answer`) do no I/O;
:func:`relay_webhook` joins them with :meth:`ClientRegistry.deliver` (or :meth:`Router.deliver` across
nodes), and with :meth:`Replayer.accept` for apps with ``replay = true``.

* protocol.md §1-§3: body ``{"encrypt": ...}``, AES-256-CBC, ``X-Lark-Signature`` = sha256(ts+nonce+key+body),
  url_verification carries no signature and is answered here with ``{"challenge": ...}`` (token checked).
* long-connection.md §1 "Encryption": pushes over the long connection are plaintext; the client runs
  ``_do_without_validation``, so the gateway is where the signature and token are checked.
* long-connection.md §1 "Answering an event" / "Card callbacks": ``{"code":200}`` -> 200
  ``{"msg":"success"}``;
  ``{"code":200,"data":base64(JSON)}`` -> 200 with that JSON; ``{"code":500}`` -> 500; no answer -> 504;
  nobody connected -> 503 + Retry-After. Any non-2xx makes Feishu re-push an event (§3 "Re-push schedule").
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from ...events import EventV2, LegacyCardAction, UrlVerification
from ...exceptions import MalformedRequestError, RequestRejected, rejection_hint
from ...verify import header_value, verify_request
from ..answer import SUCCESS, Answer
from ..limits import BackendUnavailable
from ..outcomes import WebhookOutcome
from .config import GatewayApp
from .registry import DeliveryTimeout, NoClientConnected
from .replayer import Replayer, ReplayFull

__all__ = [
    "REJECTED",
    "Deliverer",
    "GatewayAnswer",
    "OpenedWebhook",
    "http_answer",
    "open_webhook",
    "relay_webhook",
]

log = logging.getLogger("wslarkbot.relay.longconn")


#: The answer to every webhook that fails verification, whatever failed (no oracle: a poster must not
#: tell bad padding from bad JSON from a wrong token); the cause goes to this relay's log, which holds
#: the app's keys.
REJECTED = Answer(401, b'{"msg":"request rejected"}')


@dataclass(frozen=True)
class OpenedWebhook:
    """A verified webhook. ``kind`` is ``"challenge"``, ``"event"`` or ``"callback"``."""

    kind: str
    plaintext: bytes = field(repr=False)
    challenge: str | None = None
    event_type: str | None = None
    event_id: str | None = None


class GatewayAnswer(NamedTuple):
    """What goes back to Feishu (the relay's :class:`~..answer.Answer`), with the request ``kind``
    (``event``, ``callback``, ``challenge``) and the :class:`~..outcomes.WebhookOutcome` for metrics."""

    answer: Answer
    kind: str
    outcome: WebhookOutcome


def _answer(
    status: int, obj: Any, headers: Mapping[str, str] | None = None, *, kind: str, outcome: WebhookOutcome
) -> GatewayAnswer:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return GatewayAnswer(Answer(status, body, dict(headers) if headers else None), kind, outcome)


def open_webhook(app: GatewayApp, headers: Mapping[str, str], body: bytes) -> OpenedWebhook:
    """Verify and decrypt one webhook request for ``app`` with the SDK's verifier (:mod:`wslarkbot.verify`).

    Raises:
        RequestRejected: not JSON, undecryptable, a wrong signature or token, not a Feishu payload, or a
        legacy card callback (``card.action.trigger_v1`` cannot use the long connection,
        long-connection.md §1).
    """
    try:
        outer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequestError("body is not JSON") from None
    verified = verify_request(
        headers, outer, body, encrypt_key=app.encrypt_key, verification_token=app.verification_token
    )
    event = verified.event
    if isinstance(event, UrlVerification):
        return OpenedWebhook("challenge", verified.plaintext, challenge=event.challenge)
    if isinstance(event, LegacyCardAction):
        raise MalformedRequestError("legacy card callbacks cannot use the long connection")
    event_id = event.event_id if isinstance(event, EventV2) else event.dedup_key
    # New-style callbacks travel as `type=event` frames and answer with `data` (long-connection.md §1).
    kind = "callback" if event.is_callback else "event"
    return OpenedWebhook(kind, verified.plaintext, event_type=event.event_type, event_id=str(event_id))


def http_answer(opened: OpenedWebhook, answer: Mapping[str, Any]) -> GatewayAnswer:
    """Map the client's answer frame payload to Feishu's HTTP response (long-connection.md §1)."""
    kind = opened.kind
    if answer.get("code") != 200:
        return _answer(500, {"msg": "bot handler failed"}, kind=kind, outcome=WebhookOutcome.ERROR_GATEWAY)
    data = answer.get("data")
    if data:
        try:
            raw = base64.b64decode(data, validate=True)
            json.loads(raw)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            return _answer(
                502,
                {"msg": "bot answered with invalid callback data"},
                kind=kind,
                outcome=WebhookOutcome.ERROR_GATEWAY,
            )
        return GatewayAnswer(Answer(200, raw), kind, WebhookOutcome.REPLY_GATEWAY)
    if kind == "event":
        return GatewayAnswer(SUCCESS, kind, WebhookOutcome.ACK_GATEWAY)
    return GatewayAnswer(Answer(200, b"{}"), kind, WebhookOutcome.REPLY_GATEWAY)


class Deliverer(Protocol):
    """:class:`~.registry.ClientRegistry` (one node) or :class:`~.router.Router` (any node)."""

    async def deliver(
        self, app_id: str, payload: bytes, *, timeout: float, trace_id: str | None = None
    ) -> dict[str, Any]: ...


def _unavailable(opened: OpenedWebhook, retry_after: int, msg: str, outcome: WebhookOutcome) -> GatewayAnswer:
    return _answer(503, {"msg": msg}, {"Retry-After": str(retry_after)}, kind=opened.kind, outcome=outcome)


async def relay_webhook(
    clients: Deliverer,
    app: GatewayApp,
    headers: Mapping[str, str],
    body: bytes,
    *,
    timeout: float,
    retry_after: int,
    replayer: Replayer | None = None,
) -> GatewayAnswer:
    """Verify the webhook, push it to one (or every) client of ``app``, and wait for the answer.

    With ``replayer`` (the app has ``replay = true``) events, not callbacks, are stored first: 200 once
    stored, even if no client answers within ``timeout``; 503 when the buffer is full.
    """
    try:
        opened = open_webhook(app, headers, body)
    except RequestRejected as exc:
        log.warning("gateway webhook for %s rejected: %s", app.app_id, rejection_hint(exc))
        return GatewayAnswer(REJECTED, "event", WebhookOutcome.REJECTED)
    if opened.kind == "challenge":
        return _answer(
            200, {"challenge": opened.challenge}, kind="challenge", outcome=WebhookOutcome.CHALLENGE_GATEWAY
        )
    trace_id = header_value(headers, "X-Request-Id")
    where = f"gateway {app.app_id} {opened.event_type} {opened.event_id}"
    try:
        if replayer is not None and opened.kind == "event":
            buffered = await replayer.accept(app, opened.plaintext, trace_id, timeout)
            if buffered is None:
                log.info("%s: buffered for replay", where)
                return GatewayAnswer(SUCCESS, "event", WebhookOutcome.BUFFERED_GATEWAY)
            answer = buffered
        else:
            answer = await clients.deliver(app.app_id, opened.plaintext, timeout=timeout, trace_id=trace_id)
    except NoClientConnected:
        log.warning("%s: no client connected", where)
        return _unavailable(opened, retry_after, "no bot connected", WebhookOutcome.NO_SUBSCRIBER)
    except ReplayFull:
        log.warning("%s: replay buffer full (%d events)", where, app.replay_size)
        return _unavailable(opened, retry_after, "replay buffer full", WebhookOutcome.BUFFER_FULL)
    except BackendUnavailable:
        log.warning("%s: redis unavailable", where)
        return _unavailable(
            opened, retry_after, "relay backend unavailable", WebhookOutcome.BACKEND_UNAVAILABLE
        )
    except DeliveryTimeout:
        log.warning("%s: no answer in time", where)
        return _answer(
            504, {"msg": "bot did not answer in time"}, kind=opened.kind, outcome=WebhookOutcome.TIMEOUT
        )
    result = http_answer(opened, answer)
    log.info("%s -> %d", where, result.answer.status)
    return result
