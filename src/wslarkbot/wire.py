"""The relay's wire format, shared by the relay and the client. No I/O.

Relay -> subscriber: one WebSocket text frame per webhook request, the *envelope*, wire-compatible with
the original nginx + nchan relay (docs/protocol.md)::

    {"headers": {<Feishu's request headers, lower-cased>, "x-app-id": "cli_...",
                 "x-org-id": "hook" | "org_<name>", "x-request-id": "..."},
     "body": <the JSON body as Feishu sent it>,
     "raw_body": "<the exact body text, so signatures can be checked on the bytes Feishu signed>"}

Fields may be added, never removed or renamed: clients of the original protocol read only
``headers`` and ``body``.

Protocol 2 (new clients that connect with ``?proto=2``) adds JSON control messages:

* relay -> client, first frame: ``{"type": "hello", "protocol": 2, "server": "...", "channels": [...]}``.
  A client that sees an envelope (no ``type``) first is talking to an original relay (nchan) and must
  fall back to the original protocol: replies by ``POST /sub/<request_id>``, no acks.
* client -> relay: ``{"type": "reply", "request_id": "...", "body": {...}}`` answers a request that waits
  (challenge, card callback); ``{"type": "ack", "request_id": "..."}`` says an event was handled.
* relay -> client: ``{"type": "error", "request_id": "...", "reason": "..."}`` when a reply or ack was
  refused (unknown or expired request id, not a subscriber of the request's channel).

Delivery (docs/delivery.md): our relay adds ``"id"`` (``<ms>-<seq>``, increasing per channel) and
``"channel"`` to every envelope, and ``"replay": true`` to buffered events sent again after Feishu was
answered. A protocol-2 client may copy ``id`` and ``channel`` into its ``reply``/``ack`` so the relay can mark
a buffered event acked even on a later connection; it subscribes with ``?since=<channel>:<id>[,...]`` to
resume after the last id it saw, and with ``?group=<name>`` to share events with the group's members.
* Either side may send the text ``PING``; the other answers ``PONG`` (nchan's client heartbeat).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import _json
from .exceptions import ProtocolError

__all__ = [
    "CHANNEL_RE",
    "HOOK_ORG_ID",
    "PING",
    "PONG",
    "PROTOCOL_VERSION",
    "REQUEST_ID_RE",
    "Ack",
    "Nack",
    "Envelope",
    "Hello",
    "MessageRef",
    "Reply",
    "ServerError",
    "encode_message",
    "filter_headers",
    "is_org_channel",
    "parse_client_message",
    "parse_server_message",
]

PROTOCOL_VERSION = 2
PING = "PING"
PONG = "PONG"
HOOK_ORG_ID = "hook"

#: A channel is an app id (``cli_...``) or an organisation (``org_<name>``). Case-sensitive.
# \Z, not $: "$" also matches before a trailing newline, which would let "cli_a\n" through (and into logs).
CHANNEL_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
#: Request ids are matched exactly (the original cut them at the first unexpected character).
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")

#: Headers never forwarded to subscribers: credentials and hop-by-hop headers.
_DROPPED_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
    }
)


def is_org_channel(name: str) -> bool:
    """``org_<name>`` channels serve every bot of an organisation and need basic auth."""
    return name.startswith("org_")


def filter_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case header names and drop credentials and hop-by-hop headers.

    ``headers`` is a mapping or ``(name, value)`` pairs in arrival order; of repeated names the last wins.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    dropped = _DROPPED_HEADERS
    return {lk: value for key, value in pairs if (lk := key.lower()) not in dropped}


def _dumps(obj: Any) -> str:
    # Compact, non-ASCII as is; orjson when installed, same text as json.dumps (wslarkbot/_json.py).
    return _json.dumps(obj)


@dataclass
class Envelope:
    """One webhook request as the relay pushes it to subscribers."""

    headers: dict[str, str]
    body: Any
    raw_body: str | None = None
    #: Fields this version does not know, kept so nothing is lost when re-encoding.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_request(
        cls,
        headers: Mapping[str, str],
        raw_body: bytes,
        *,
        app_id: str,
        org_id: str,
        request_id: str,
        filtered: bool = False,
    ) -> Envelope:
        """Build the envelope for a webhook request (relay side).

        Args:
            filtered: ``headers`` is already :func:`filter_headers`' result; it is used (and updated) as is.

        Raises:
            ProtocolError: the body is not UTF-8 JSON.
        """
        try:
            text = raw_body.decode("utf-8")
            body = _json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError("request body is not UTF-8 JSON") from exc
        hdrs = headers if filtered and isinstance(headers, dict) else filter_headers(headers)
        hdrs["x-app-id"] = app_id
        hdrs["x-org-id"] = org_id
        hdrs["x-request-id"] = request_id
        return cls(headers=hdrs, body=body, raw_body=text)

    @property
    def request_id(self) -> str:
        return self.headers.get("x-request-id", "")

    @property
    def app_id(self) -> str:
        return self.headers.get("x-app-id", "")

    @property
    def org_id(self) -> str:
        return self.headers.get("x-org-id", HOOK_ORG_ID)

    @property
    def message_id(self) -> str | None:
        """The relay's per-channel message id (``<ms>-<seq>``), if it sent one."""
        value = self.extra.get("id")
        return value if isinstance(value, str) else None

    @property
    def channel(self) -> str | None:
        """The channel the relay received this envelope on, if it said."""
        value = self.extra.get("channel")
        return value if isinstance(value, str) else None

    @property
    def replay(self) -> bool:
        """True for a buffered event sent again (``"replay": true``): Feishu was answered long ago."""
        return self.extra.get("replay") is True

    @property
    def has_signature(self) -> bool:
        return bool(self.headers.get("x-lark-signature"))

    def raw_bytes(self) -> bytes:
        """The bytes Feishu signed: ``raw_body`` when the relay sent it, else compact re-encoded JSON
        (what an original relay allows; signatures of bodies with non-ASCII text may then not match)."""
        if self.raw_body is not None:
            return self.raw_body.encode("utf-8")
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"headers": self.headers, "body": self.body}
        if self.raw_body is not None:
            out["raw_body"] = self.raw_body
        out.update(self.extra)
        return out

    def to_json(self) -> str:
        return _dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Envelope:
        headers = data.get("headers")
        if not isinstance(headers, Mapping) or "body" not in data:
            raise ProtocolError("envelope needs 'headers' (object) and 'body'")
        raw = data.get("raw_body")
        extra = {k: v for k, v in data.items() if k not in ("headers", "body", "raw_body")}
        return cls(
            headers={str(k).lower(): str(v) for k, v in headers.items()},
            body=data["body"],
            raw_body=raw if isinstance(raw, str) else None,
            extra=extra,
        )


@dataclass(frozen=True)
class Hello:
    """First frame a protocol-2 relay sends."""

    protocol: int
    server: str = ""
    channels: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "protocol": self.protocol,
            "server": self.server,
            "channels": list(self.channels),
            **self.extra,
        }


@dataclass(frozen=True)
class MessageRef:
    """Which buffered message an answer is for: the envelope's ``channel`` and ``id``."""

    channel: str
    id: str


def _with_ref(out: dict[str, Any], ref: MessageRef | None) -> dict[str, Any]:
    if ref is not None:
        out["channel"] = ref.channel
        out["id"] = ref.id
    return out


def _settle_dict(kind: str, request_id: str, ref: MessageRef | None, resend: bool) -> dict[str, Any]:
    """The frame of an ``ack`` or ``nack``."""
    out = _with_ref({"type": kind, "request_id": request_id}, ref)
    if resend:
        out["resend"] = True
    return out


def _ref(data: Mapping[str, Any]) -> MessageRef | None:
    channel, mid = data.get("channel"), data.get("id")
    if isinstance(channel, str) and isinstance(mid, str) and CHANNEL_RE.match(channel) and len(mid) <= 64:
        return MessageRef(channel, mid)
    return None


@dataclass(frozen=True)
class Reply:
    """A bot's answer to a waiting request (challenge, card callback)."""

    request_id: str
    body: Any
    ref: MessageRef | None = None

    def to_dict(self) -> dict[str, Any]:
        return _with_ref({"type": "reply", "request_id": self.request_id, "body": self.body}, self.ref)


@dataclass(frozen=True)
class Ack:
    """A bot says it has handled (or is safely handling) an event."""

    request_id: str
    ref: MessageRef | None = None
    #: sent again over a new connection (the first copy may have died with the old one): the relay
    #: settles the buffered event and stays silent if the request itself is long answered
    resend: bool = False

    def to_dict(self) -> dict[str, Any]:
        return _settle_dict("ack", self.request_id, self.ref, self.resend)


@dataclass(frozen=True)
class Nack:
    """A bot says it did not handle a request: its handler failed, or the request failed verification.

    The relay answers the waiting webhook at once with a non-2xx, so Feishu delivers it again (for an
    event) or shows an error at once (challenge, callback). It carries no reason: the poster learns
    nothing about why (the bot's log says), whatever the cause.
    """

    request_id: str
    ref: MessageRef | None = None
    resend: bool = False  # as Ack.resend

    def to_dict(self) -> dict[str, Any]:
        return _settle_dict("nack", self.request_id, self.ref, self.resend)


@dataclass(frozen=True)
class ServerError:
    """The relay refused a reply or ack."""

    reason: str
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "error", "reason": self.reason}
        if self.request_id is not None:
            out["request_id"] = self.request_id
        return out


def encode_message(msg: Hello | Reply | Ack | Nack | ServerError | Envelope) -> str:
    """One WebSocket text frame for ``msg``."""
    return _dumps(msg.to_dict())


def _loads_object(text: str | bytes) -> dict[str, Any]:
    try:
        data = _json.loads(text)
    except ValueError as exc:
        raise ProtocolError("frame is not JSON") from exc
    if not isinstance(data, dict):
        raise ProtocolError("frame is not a JSON object")
    return data


def _request_id(data: Mapping[str, Any]) -> str:
    rid = data.get("request_id")
    if not isinstance(rid, str) or not REQUEST_ID_RE.match(rid):
        raise ProtocolError("missing or invalid request_id")
    return rid


def parse_client_message(text: str | bytes) -> Reply | Ack | Nack | str:
    """Parse a frame a client sent to the relay.

    Returns:
        :class:`Reply`, :class:`Ack`, :class:`Nack`, or the string ``PING``/``PONG``.

    Raises:
        ProtocolError: anything else.
    """
    if text in (PING, PONG, PING.encode(), PONG.encode()):
        return text.decode() if isinstance(text, bytes) else text
    data = _loads_object(text)
    kind = data.get("type")
    if kind == "reply":
        if "body" not in data:
            raise ProtocolError("reply needs a 'body'")
        return Reply(_request_id(data), data["body"], _ref(data))
    if kind == "ack":
        return Ack(_request_id(data), _ref(data), data.get("resend") is True)
    if kind == "nack":
        return Nack(_request_id(data), _ref(data), data.get("resend") is True)
    raise ProtocolError(f"unknown message type {kind!r}")


def parse_server_message(text: str | bytes) -> Envelope | Hello | ServerError | str:
    """Parse a frame the relay (ours or an original nchan relay) sent to a client.

    Raises:
        ProtocolError: not a hello, error, envelope, ``PING`` or ``PONG``.
    """
    if text in (PING, PONG, PING.encode(), PONG.encode()):
        return text.decode() if isinstance(text, bytes) else text
    data = _loads_object(text)
    kind = data.get("type")
    if kind is None:
        return Envelope.from_dict(data)
    if kind == "hello":
        proto = data.get("protocol")
        if not isinstance(proto, int):
            raise ProtocolError("hello needs an integer 'protocol'")
        chans = data.get("channels") or []
        known = {"type", "protocol", "server", "channels"}
        return Hello(
            protocol=proto,
            server=str(data.get("server", "")),
            channels=tuple(str(c) for c in chans),
            extra={k: v for k, v in data.items() if k not in known},
        )
    if kind == "error":
        rid = data.get("request_id")
        return ServerError(str(data.get("reason", "")), rid if isinstance(rid, str) else None)
    raise ProtocolError(f"unknown message type {kind!r}")
