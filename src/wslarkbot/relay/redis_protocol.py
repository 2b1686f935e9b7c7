"""What relay nodes say to each other through Redis: key and channel names, messages, the resolve script.

No I/O and no ``redis`` import: :mod:`.redis_link` moves these bytes, :mod:`.redis_hub` decides what to send.
The design is described in :mod:`.redis_hub` and docs/deploy.md.

Names (``<node>`` is a node id, ``<channel>`` a relay channel, ``<rid>`` a request id)::

    wslarkbot:ch:<channel>             pub/sub: envelopes for <channel>; a node subscribes while it has
                                       local subscribers of <channel>
    wslarkbot:node:<node>:replies      pub/sub: everything addressed to one node (delivery reports, answers)
    wslarkbot:req:<rid>                string "<node> <channel>[ answered]", PX = longest wait + margin:
                                       which node holds the waiting webhook, and whether it was answered

Messages:

* fan-out (on ``wslarkbot:ch:<channel>``): ``<origin node>\\n<rid>\\n<envelope frame>`` — the frame is the
  exact text subscribers get, so a node decodes it once and shares it among its subscribers;
* to a node, JSON: ``{"t": "delivered", "id": rid, "n": 2, "p2": true}`` (a node's local fan-out result),
  ``{"t": "answer", "id": rid, "kind": "reply"|"ack", "body": "<json text>"|null, "via": "ws"|"http"}``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from dataclasses import dataclass, field

from ..exceptions import ProtocolError
from .pending import Outcome, Resolution

__all__ = [
    "KEY_PREFIX",
    "RESOLVE_SCRIPT",
    "DeliveryReport",
    "Tally",
    "channel_of",
    "decode_fanout",
    "decode_node_message",
    "encode_answer",
    "encode_delivered",
    "encode_fanout",
    "fanout_channel",
    "node_channel",
    "pending_value",
    "request_key",
    "resolve_args",
    "resolution_of",
]

KEY_PREFIX = "wslarkbot:"
_FANOUT_PREFIX = KEY_PREFIX + "ch:"


def fanout_channel(channel: str) -> str:
    """The Redis pub/sub channel carrying envelopes of relay channel ``channel``."""
    return _FANOUT_PREFIX + channel


def channel_of(redis_channel: str) -> str | None:
    """The relay channel of a fan-out Redis channel, or None for any other Redis channel."""
    return redis_channel[len(_FANOUT_PREFIX) :] if redis_channel.startswith(_FANOUT_PREFIX) else None


def node_channel(node_id: str) -> str:
    """The Redis pub/sub channel of messages addressed to node ``node_id``."""
    return f"{KEY_PREFIX}node:{node_id}:replies"


def request_key(request_id: str) -> str:
    """The key recording which node holds the waiting webhook ``request_id``."""
    return f"{KEY_PREFIX}req:{request_id}"


def pending_value(node_id: str, channel: str) -> str:
    """The value stored under :func:`request_key` (neither part contains a space)."""
    return f"{node_id} {channel}"


def encode_fanout(origin: str, request_id: str, frame: str) -> bytes:
    return f"{origin}\n{request_id}\n{frame}".encode()


def decode_fanout(data: bytes) -> tuple[str, str, str]:
    """``(origin node, request id, frame)``.

    Raises:
        ProtocolError: not a fan-out message.
    """
    try:
        origin, request_id, frame = data.decode("utf-8").split("\n", 2)
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("malformed fan-out message") from None
    return origin, request_id, frame


def encode_delivered(request_id: str, subscribers: int, protocol2: bool) -> bytes:
    return json.dumps({"t": "delivered", "id": request_id, "n": subscribers, "p2": protocol2}).encode()


def encode_answer(request_id: str, outcome: Outcome) -> bytes:
    msg = {"t": "answer", "id": request_id, "kind": outcome.kind, "body": outcome.body, "via": outcome.via}
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class DeliveryReport:
    """One node's local fan-out result for one request."""

    request_id: str
    subscribers: int
    protocol2: bool


def decode_node_message(data: bytes) -> DeliveryReport | tuple[str, Outcome]:
    """A :class:`DeliveryReport`, or ``(request_id, outcome)`` for an answer.

    Raises:
        ProtocolError: not a node message.
    """
    try:
        msg = json.loads(data)
        if msg["t"] == "delivered":
            return DeliveryReport(str(msg["id"]), int(msg["n"]), bool(msg["p2"]))
        if msg["t"] == "answer" and msg["kind"] in ("reply", "ack"):
            body = msg.get("body")
            return str(msg["id"]), Outcome(
                msg["kind"], body if isinstance(body, str) else None, str(msg["via"])
            )
    except (ValueError, KeyError, TypeError):
        pass
    raise ProtocolError("malformed node message")


#: Resolve a waiting request wherever it waits, atomically (the first answer wins across nodes).
#: KEYS[1] = request key; ARGV[1] = "1" to check channels, "0" not to (POST /sub/<id>);
#: ARGV[2] = the answer message; ARGV[3..] = the answering connection's channels.
#: Returns ok / unknown / forbidden / answered. PUBLISH reaching nobody means the waiting node is gone.
RESOLVE_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if not v then return 'unknown' end
local node, channel, answered = string.match(v, '^(%S+) (%S+)(.*)$')
if not node then return 'unknown' end
if ARGV[1] == '1' then
  local ok = false
  for i = 3, #ARGV do
    if ARGV[i] == channel then ok = true; break end
  end
  if not ok then return 'forbidden' end
end
if answered ~= '' then return 'answered' end
if redis.call('PUBLISH', 'wslarkbot:node:' .. node .. ':replies', ARGV[2]) == 0 then return 'unknown' end
redis.call('SET', KEYS[1], v .. ' answered', 'KEEPTTL')
return 'ok'
"""

_RESOLUTIONS = {
    "ok": Resolution.OK,
    "unknown": Resolution.UNKNOWN,
    "forbidden": Resolution.FORBIDDEN,
    "answered": Resolution.ALREADY_ANSWERED,
}


def resolve_args(request_id: str, outcome: Outcome, channels: Collection[str] | None) -> list[str | bytes]:
    """ARGV for :data:`RESOLVE_SCRIPT`."""
    check = "0" if channels is None else "1"
    return [check, encode_answer(request_id, outcome), *sorted(channels or ())]


def resolution_of(reply: bytes | str) -> Resolution:
    """The :class:`Resolution` named by the script's reply."""
    text = reply.decode() if isinstance(reply, bytes) else reply
    try:
        return _RESOLUTIONS[text]
    except KeyError:
        raise ProtocolError(f"unexpected resolve script reply {text[:20]!r}") from None


@dataclass
class Tally:
    """Delivery reports for one published request, gathered on the node that published it.

    Settled when every node the fan-out reached has reported (about one Redis round trip), or when an
    answer arrived. Not earlier on the first protocol-2 report: the count would then be short, and ``/status``
    and the log line report it.
    """

    expected: int | None = None
    reports: int = 0
    subscribers: int = 0
    protocol2: bool = False
    answered: bool = False
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def expect(self, nodes: int) -> None:
        """The fan-out reached ``nodes`` nodes (PUBLISH's answer)."""
        self.expected = nodes
        self._check()

    def add(self, report: DeliveryReport) -> None:
        self.reports += 1
        self.subscribers += report.subscribers
        self.protocol2 = self.protocol2 or report.protocol2
        self._check()

    def answer_arrived(self) -> None:
        """An answer proves delivery, whatever the reports say."""
        self.answered = True
        self.settled.set()

    def _check(self) -> None:
        if self.expected is not None and self.reports >= self.expected:
            self.settled.set()
