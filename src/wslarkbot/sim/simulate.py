"""``wslarkbot simulate``: send one request to a webhook URL as Feishu would, judge the answer as Feishu does.

Like ``stripe trigger``: point it at a relay (``http://relay/hook/cli_x``) or a bot's own webhook, with the
app's Encrypt Key and Verification Token, and it shows what Feishu would see: the HTTP status, the time
taken, the verdict (protocol.md §4 challenge within 1 s, §5 events need HTTP 200 within 3 s, §6 callbacks
need a valid JSON answer within 3 s), why it failed, what to check, and which retries Feishu would make.

:func:`simulate` does the I/O through :class:`~wslarkbot.sim.feishu.FeishuSimulator`; :func:`explain` and
:func:`format_report` are pure. Example::

    report = await simulate(SimApp("cli_x", "", "token", "key"), "http://127.0.0.1:8888/hook/cli_x", "text")
    print(format_report(report))
    sys.exit(0 if report.ok else 1)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..client.connection import ssl_context
from .app import SimApp
from .feishu import FEISHU_RETRY_INTERVALS, FeishuSimulator, new_http_client
from .protocol import SentRequest

__all__ = ["KINDS", "SimulationReport", "describe_intervals", "explain", "format_report", "simulate"]

#: What ``--kind`` accepts.
KINDS = ("text", "card", "challenge", "legacy-card")

_BODY_SHOWN = 300  # characters of the answer's body shown


@dataclass
class Attempt:
    """One HTTP attempt: ``status`` None when no answer came (``error`` says why)."""

    status: int | None
    elapsed: float
    error: str | None = None
    body: str = ""


@dataclass
class SimulationReport:
    """What Feishu would conclude about one simulated request.

    Attributes:
        ok: Feishu would be satisfied (exit status 0).
        verdict: one line, Feishu's conclusion.
        reason: why it failed, in Feishu's terms (``None`` when ok).
        hint: what to check, our best guess from the answer (``None`` when ok).
        retries_left: seconds before each retry Feishu would still make (events only; empty otherwise).
        attempts: every HTTP attempt made (more than one with ``retries``).
        request: a description of what was sent (no secrets).
    """

    kind: str
    url: str
    ok: bool
    verdict: str
    request: str
    attempts: list[Attempt] = field(default_factory=list)
    reason: str | None = None
    hint: str | None = None
    retries_left: tuple[float, ...] = ()
    response: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``--json``)."""
        return asdict(self)


def describe_intervals(intervals: Sequence[float]) -> str:
    """``(15, 300, 3600)`` -> ``"15 s, 5 min and 1 h"``."""

    def one(seconds: float) -> str:
        if seconds >= 3600 and seconds % 3600 == 0:
            return f"{seconds / 3600:g} h"
        if seconds >= 60 and seconds % 60 == 0:
            return f"{seconds / 60:g} min"
        return f"{seconds:g} s"

    parts = [one(s) for s in intervals]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _msg(body: str) -> str:
    try:
        decoded = json.loads(body)
    except ValueError:
        return ""
    return str(decoded.get("msg", "")) if isinstance(decoded, dict) else ""


def explain(status: int | None, body: str = "", error: str | None = None) -> str | None:
    """What to check, from the answer alone (wslarkbot's relay and webhook answers included).

    Returns ``None`` for a 200 (a bad 200 is judged by the caller, who knows the request kind).
    """
    msg = _msg(body)
    if status is None:
        if error == "timeout":
            return "nothing answered in time: is the bot busy, or is the URL a black hole (firewall)?"
        if error and "CERTIFICATE_VERIFY_FAILED" in error:
            return (
                f"the server's TLS certificate is not trusted ({error}): for a private CA pass "
                "--cacert <CA file>; Feishu itself needs a certificate from a public CA"
            )
        if error and ("WRONG_VERSION_NUMBER" in error or "record layer" in error):
            return f"TLS failed ({error}): the URL is https:// but the server speaks plain HTTP"
        return f"could not connect ({error}): is the relay or webhook server running at this URL?"
    if status == 200:
        return None
    if status == 503 and "no subscriber" in msg:
        return (
            "the relay has no bot connected for this channel: start the bot (`wslarkbot run` or your "
            "Client) with this app id, and check it connects to this relay"
        )
    if status == 500 and "did not handle" in msg:
        return (
            "the bot did not handle the request: it rejected it (look for 'rejected' in its log, which "
            "names the check: a wrong Encrypt Key or Verification Token) or its handler failed"
        )
    if status == 504:
        return (
            "the relay got no answer from the bot in time: its handler is slow, or the bot rejected the "
            "request without telling the relay (an older client: look for 'rejected' in its log)"
        )
    if status == 401:
        return (
            "the receiver refused the request (signature, decryption or token): do --encrypt-key and "
            "--verification-token match the bot's configuration?"
        )
    if status == 400:
        return (
            "the receiver could not read the request: a wrong --encrypt-key decrypts to garbage; "
            "or --encrypt-key is set but the bot expects plaintext (or the reverse)"
        )
    if status == 404:
        return "no such route: the relay's URL is /hook/<app_id> (or /org_<name>/<app_id>)"
    if status == 413:
        return "the body is larger than the receiver accepts"
    if status == 503:
        return "the receiver is unavailable (shutting down or over a limit); Retry-After may say when"
    if 300 <= status < 400:
        return "Feishu does not follow redirects: give it the final URL"
    if status >= 500:
        return "the receiver failed while handling the request: see its log"
    return None


def _attempt(record: SentRequest) -> Attempt:
    body = (record.response_body or b"").decode("utf-8", "replace")
    return Attempt(record.status, record.elapsed or 0.0, record.error, body)


def _describe_request(kind: str, app: SimApp, record: SentRequest | None) -> str:
    what = {
        "text": "event im.message.receive_v1 (a text message)",
        "card": "callback card.action.trigger (a button click)",
        "challenge": "url_verification (the console saving the request URL)",
        "legacy-card": "legacy card callback card.action.trigger_v1",
    }[kind]
    if kind == "legacy-card":
        how = "plaintext, sha1-signed with the Verification Token"
    else:
        how = "encrypted" if app.encrypt_key else "plaintext"
        signed = record is not None and "X-Lark-Signature" in record.headers
        how += ", signed" if signed else ", unsigned"
    key = f", id {record.key}" if record is not None and record.key else ""
    return f"{what}: {how}{key}"


async def simulate(
    app: SimApp,
    url: str,
    kind: str = "text",
    *,
    text: str = "hello from wslarkbot simulate",
    value: Mapping[str, Any] | None = None,
    retries: int = 0,
    time_scale: float = 1.0,
    cacert: str | None = None,
) -> SimulationReport:
    """Send one ``kind`` request to ``url`` for ``app`` and judge the answer.

    Args:
        kind: one of :data:`KINDS`.
        text: the text of a ``text`` message.
        value: the button's ``value`` for ``card`` and ``legacy-card``.
        retries: for ``text``, how many of Feishu's retries to actually perform (at its intervals times
            ``time_scale``) when the first attempt fails; the rest are reported as ``retries_left``.
        cacert: a CA bundle (PEM) to trust for an ``https`` URL (a relay with a private CA's certificate),
            read as ``Client(ssl=...)`` reads one.

    Raises:
        ValueError: an unknown ``kind`` or a negative ``retries``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not 0 <= retries <= len(FEISHU_RETRY_INTERVALS):
        raise ValueError(f"retries must be 0..{len(FEISHU_RETRY_INTERVALS)}")
    value = dict(value) if value is not None else {"action": "wslarkbot-simulate"}
    http = new_http_client(verify=ssl_context(cacert, option="--cacert ") or True)
    async with (
        http,
        FeishuSimulator(
            app,
            event_url=url,
            retry_intervals=FEISHU_RETRY_INTERVALS[:retries],
            time_scale=time_scale,
            http_client=http,
        ) as sim,
    ):
        if kind == "challenge":
            challenge = await sim.url_verification()
            report = _report(kind, url, app, sim, challenge.ok)
            if not challenge.ok:
                report.reason = (
                    f'{challenge.error}: the answer must be HTTP 200 {{"challenge": ...}} within 1 s'
                )
                report.verdict = "the console would refuse to save this URL (no retry: you click Save again)"
            else:
                report.verdict = "challenge echoed in time: the console would save this URL"
        elif kind == "text":
            delivery = await sim.send_text_message(text)
            report = _report(kind, url, app, sim, delivery.delivered)
            if delivery.delivered:
                after = f" after {delivery.retries} retries" if delivery.retries else ""
                report.verdict = f"delivered{after} (an event needs HTTP 200 within 3 s; the body is ignored)"
            else:
                report.retries_left = FEISHU_RETRY_INTERVALS[retries:]
                last = report.attempts[-1]
                got = "no answer within 3 s" if last.status is None else f"HTTP {last.status}"
                report.reason = f"{got}; an event needs HTTP 200 within 3 s"
                report.verdict = "not delivered"
        else:
            legacy = kind == "legacy-card"
            send = sim.send_legacy_card_action if legacy else sim.send_card_action
            callback = await send(value)
            report = _report(kind, url, app, sim, callback.ok)
            report.response = callback.response
            if callback.ok:
                report.verdict = "valid answer in time: the user sees it (toast / card)"
            else:
                report.reason = f"error {callback.error_code}: {callback.error}"
                report.verdict = "the user would see an error toast (callbacks are never retried)"
    if not report.ok and report.hint is None:
        final = report.attempts[-1] if report.attempts else None
        report.hint = explain(final.status, final.body, final.error) if final else None
        if report.hint is None and final is not None and final.status == 200:
            report.hint = "the receiver answered 200 but not what Feishu expects: see the body above"
    return report


def _report(kind: str, url: str, app: SimApp, sim: FeishuSimulator, ok: bool) -> SimulationReport:
    records = list(sim.sent)
    return SimulationReport(
        kind,
        url,
        ok,
        "",
        _describe_request(kind, app, records[0] if records else None),
        [_attempt(r) for r in records],
    )


def format_report(report: SimulationReport) -> str:
    """The human-readable report: request, each answer, verdict, and (when failed) why and what to check."""
    lines = [f"-> POST {report.url}", f"   {report.request}"]
    for n, attempt in enumerate(report.attempts):
        label = "<- " if n == 0 else f"<- retry {n}: "
        if attempt.status is None:
            got = "no answer (timeout)" if attempt.error == "timeout" else f"no answer ({attempt.error})"
        else:
            got = f"HTTP {attempt.status}"
        lines.append(f"{label}{got} in {attempt.elapsed * 1000:.0f} ms")
        if attempt.body:
            shown = attempt.body[:_BODY_SHOWN] + ("..." if len(attempt.body) > _BODY_SHOWN else "")
            lines.append(f"   body: {shown}")
    if report.ok:
        lines.append(f"OK: {report.verdict}")
        return "\n".join(lines)
    lines.append(f"FAILED: {report.verdict}")
    if report.reason:
        lines.append(f"   why: {report.reason}")
    if report.hint:
        lines.append(f"   check: {report.hint}")
    if report.retries_left:
        n = len(report.retries_left)
        lines.append(
            f"   retries: Feishu would send the same event {n} more time{'s' if n > 1 else ''}, "
            f"waiting {describe_intervals(report.retries_left)}, then drop it"
        )
    return "\n".join(lines)
