"""What relay nodes say to each other through Redis: key and channel names, messages, the resolve script.

No I/O and no ``redis`` import: :mod:`.redis_link` moves these bytes, :mod:`.redis_hub` decides what to send.
The design is described in :mod:`.redis_hub` and docs/deploy.md.

Names (``<node>`` is a node id, ``<channel>`` a relay channel, ``<rid>`` a request id)::

    wslarkbot:ch:<channel>             pub/sub: envelopes for <channel>; a node subscribes while it has
                                       local subscribers of <channel>
    wslarkbot:node:<node>:replies      pub/sub: everything addressed to one node (delivery reports, answers)
    wslarkbot:req:<rid>                string "<node> <channel>[ answered]", PX = longest wait + margin:
                                       which node holds the waiting webhook, and whether it was answered
    wslarkbot:buf:<channel>            stream: a buffered channel's events (fields rid, body); trimmed by
                                       age (MINID) and size (oldest acked first), PEXPIRE = buffer ttl
    wslarkbot:buf:<channel>:acked      sorted set: ids of that stream's acked events (score = id's ms)
    wslarkbot:grp:<ch>:<group>:<rid>:<n>   string <node>, PX: the node that won attempt n of handing
                                       request <rid> to one member of <group> (SET NX)
    wslarkbot:grp:<ch>:<group>:e:<id>  string <node>, PX: a member of <group> is replaying buffered event <id>

Messages:

* fan-out (on ``wslarkbot:ch:<channel>``): ``<origin node>\\n<rid>\\n<id>\\n<flags>\\n<envelope>``: the
  envelope is encoded once (without ``id``/``channel``, stamped per frame); ``flags`` is ``b`` (buffered) or
  ``-``, then optionally `` g=<group> a=<attempt>`` (a hand-on to one group only, not to broadcast
  subscribers) and `` r`` (send as a replay). All nodes of a deployment must run the same version;
* to a node, JSON: ``{"t": "delivered", "id": rid, "n": 2, "p2": true}`` (a node's local fan-out result),
  ``{"t": "answer", "id": rid, "kind": "reply"|"ack"|"nack", "body": "<json text>"|null,
  "via": "ws"|"http"}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field

from ..exceptions import ProtocolError
from .hub import Event
from .pending import Outcome, Resolution

__all__ = [
    "APPEND_SCRIPT",
    "FanOut",
    "KEY_PREFIX",
    "acked_key",
    "claim_key",
    "replay_claim_key",
    "stream_key",
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
    "new_node_id",
    "node_channel",
    "pending_value",
    "login_key",
    "request_key",
    "resolve_args",
    "resolution_of",
]

KEY_PREFIX = "wslarkbot:"


def new_node_id() -> str:
    """``<hostname>-<pid>-<random>``: unique per process, readable in Redis and in logs (the relay hub's
    and the gateway's nodes alike)."""
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())[:40] or "node"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


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


def login_key(kind: str, value: str | None) -> str:
    """The key counting failed logins on a client address or user name (``kind`` ``addr``/``user``)."""
    return f"{KEY_PREFIX}authfail:{kind}:{(value or '-')[:128]}"


def request_key(request_id: str) -> str:
    """The key recording which node holds the waiting webhook ``request_id``."""
    return f"{KEY_PREFIX}req:{request_id}"


def pending_value(node_id: str, channel: str) -> str:
    """The value stored under :func:`request_key` (neither part contains a space)."""
    return f"{node_id} {channel}"


def stream_key(channel: str) -> str:
    """The Redis Stream holding buffered channel ``channel``'s events."""
    return f"{KEY_PREFIX}buf:{channel}"


def acked_key(channel: str) -> str:
    """The sorted set of acked ids of :func:`stream_key`."""
    return f"{KEY_PREFIX}buf:{channel}:acked"


def claim_key(channel: str, group: str, request_id: str, attempt: int) -> str:
    """Won (SET NX) by the node that hands attempt ``attempt`` of ``request_id`` to a member of ``group``."""
    return f"{KEY_PREFIX}grp:{channel}:{group}:{request_id}:{attempt}"


def replay_claim_key(channel: str, group: str, entry_id: str) -> str:
    """Won by the node whose member of ``group`` replays buffered event ``entry_id``."""
    return f"{KEY_PREFIX}grp:{channel}:{group}:e:{entry_id}"


@dataclass(frozen=True)
class FanOut:
    """A fan-out message: the event, and for a hand-on the one group it is for."""

    origin: str
    event: Event
    group: str | None = None
    attempt: int = 0
    replay: bool = False


def encode_fanout(
    origin: str, event: Event, *, group: str | None = None, attempt: int = 0, replay: bool = False
) -> bytes:
    flags = "b" if event.buffered else "-"
    if group is not None:
        flags += f" g={group} a={attempt}"
    if replay:
        flags += " r"
    return f"{origin}\n{event.request_id}\n{event.entry_id}\n{flags}\n{event.body}".encode()


def decode_fanout(channel: str, data: bytes) -> FanOut:
    """The :class:`FanOut` carried on ``channel``'s fan-out Redis channel.

    Raises:
        ProtocolError: not a fan-out message.
    """
    try:
        origin, request_id, entry_id, flags, body = data.decode("utf-8").split("\n", 4)
        words = flags.split()
        opts = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        event = Event(channel, request_id, entry_id, body, buffered=words[0] == "b")
        return FanOut(origin, event, opts.get("g"), int(opts.get("a", "0")), "r" in words[1:])
    except (UnicodeDecodeError, ValueError, IndexError):
        raise ProtocolError("malformed fan-out message") from None


#: Buffer one event. KEYS[1] = stream, KEYS[2] = acked set; ARGV = ttl ms, size, rid, body.
#: Drops entries older than the ttl, then the oldest entries while the stream is full *if they were acked*;
#: returns {'full'} when the oldest kept entry is unacked, else {'ok', <new id>}.
APPEND_SCRIPT = """
local ttl = tonumber(ARGV[1])
local t = redis.call('TIME')
local minid = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - ttl
if minid > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', minid)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. minid)
end
local size = tonumber(ARGV[2])
while redis.call('XLEN', KEYS[1]) >= size do
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  if not redis.call('ZSCORE', KEYS[2], first[1]) then return {'full'} end
  redis.call('XDEL', KEYS[1], first[1])
  redis.call('ZREM', KEYS[2], first[1])
end
local id = redis.call('XADD', KEYS[1], '*', 'rid', ARGV[3], 'body', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {'ok', id}
"""


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
        if msg["t"] == "answer" and msg["kind"] in ("reply", "ack", "nack"):
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
