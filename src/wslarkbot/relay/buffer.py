"""Per-channel event buffers: message ids, bounded storage, acks and replay cursors. No I/O.

Used by :class:`~.hub.InMemoryHub`; :class:`~.redis_hub.RedisHub` implements the same rules with one Redis
Stream per channel (:mod:`.redis_protocol`). docs/delivery.md states the guarantees.

* **Ids** are ``"<ms>-<seq>"`` like Redis Stream ids: per channel strictly increasing, comparable with
  :func:`parse_id`. A buffered channel's ids are a replay cursor (``?since=<channel>:<id>``).
* **Bounds**: an entry older than ``ttl`` seconds is dropped (the documented loss window). When ``size``
  entries are kept, the oldest entries are dropped only if they were acked; if the oldest is unacked the
  buffer is *full* and :meth:`ChannelBuffer.append` raises :class:`BufferFull` (the relay answers 503, Feishu
  retries): never a silent drop of an event nobody acked.
* **Acks**: an entry is acked when any subscriber (or, for a group, any member) acked or replied to it, or
  when it was handed to an original-protocol subscriber (which never acks).
"""

from __future__ import annotations

import collections
import fnmatch
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..exceptions import WslarkbotError

__all__ = [
    "BufferEntry",
    "BufferFull",
    "BufferPolicy",
    "ChannelIds",
    "BufferStore",
    "ChannelBuffer",
    "IdClock",
    "format_id",
    "parse_id",
    "parse_since",
    "stamp_frame",
]

EntryId = tuple[int, int]


def parse_id(text: str) -> EntryId:
    """``"1700000000123-4"`` -> ``(1700000000123, 4)``.

    Raises:
        ValueError: not ``<ms>-<seq>`` with non-negative integers.
    """
    ms, sep, seq = text.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"not a message id: {text[:40]!r}")
    return int(ms), int(seq)


def format_id(entry_id: EntryId) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


def parse_since(spec: str, channels: Iterable[str]) -> dict[str, str]:
    """``"cli_a:17-0,org_x:18-2"`` -> ``{"cli_a": "17-0", "org_x": "18-2"}`` (only the given channels).

    Raises:
        ValueError: a part is not ``<channel>:<id>``, or a channel is not among ``channels``.
    """
    wanted = set(channels)
    out: dict[str, str] = {}
    for part in filter(None, spec.split(",")):
        channel, sep, entry = part.rpartition(":")
        if not sep or channel not in wanted:
            raise ValueError(f"since must be <channel>:<id> for a subscribed channel, got {part[:80]!r}")
        parse_id(entry)
        out[channel] = entry
    return out


def stamp_frame(frame: str, *, entry_id: str, channel: str, replay: bool = False) -> str:
    """Add ``id``, ``channel`` (and ``"replay": true``) to an encoded envelope without re-encoding it.

    ``frame`` is a compact JSON object (``{"headers": ...}``); the new fields come first. Ids and channel
    names need no JSON escaping (``[0-9-]`` and :data:`~wslarkbot.wire.CHANNEL_RE`).
    """
    head = '{"replay":true,' if replay else "{"
    return f'{head}"id":"{entry_id}","channel":"{channel}",{frame[1:]}'


class IdClock:
    """Strictly increasing ``<ms>-<seq>`` ids from a wall clock (seconds)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.last: EntryId = (0, 0)

    def next(self) -> EntryId:
        ms = int(self.clock() * 1000)
        last_ms, last_seq = self.last
        self.last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return self.last


class BufferFull(WslarkbotError):
    """Every kept entry is unacked and the buffer holds ``size`` of them: refuse (503)."""


@dataclass
class BufferEntry:
    """One buffered event. ``frame`` is the stamped envelope (without ``replay``)."""

    id: EntryId
    channel: str
    request_id: str
    frame: str
    body: str  # the unstamped envelope, for the replay stamp
    created: float
    acked: bool = False

    @property
    def id_text(self) -> str:
        return format_id(self.id)


class ChannelBuffer:
    """The buffer of one channel (see the module docstring for the rules).

    Args:
        channel: the channel name (stamped into frames).
        size: most entries kept.
        ttl: seconds an entry is kept.
        clock: wall-clock seconds (injected in tests).
    """

    def __init__(
        self, channel: str, *, size: int, ttl: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.channel = channel
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self.ids = IdClock(clock)
        self._entries: collections.OrderedDict[EntryId, BufferEntry] = collections.OrderedDict()
        self.expired = 0  # entries dropped by ttl while unacked (the loss window), for /status and tests

    def __len__(self) -> int:
        self.expire()
        return len(self._entries)

    def expire(self) -> None:
        """Drop entries older than ``ttl``."""
        horizon = self.clock() - self.ttl
        while self._entries:
            first = next(iter(self._entries.values()))
            if first.created > horizon:
                break
            self._entries.popitem(last=False)
            if not first.acked:
                self.expired += 1

    def append(self, request_id: str, body: str) -> BufferEntry:
        """Keep the envelope ``body`` (encoded, unstamped) under a new id.

        Raises:
            BufferFull: ``size`` entries are kept and the oldest is unacked.
        """
        self.expire()
        while len(self._entries) >= self.size:
            first = next(iter(self._entries.values()))
            if not first.acked:
                raise BufferFull(f"buffer of channel {self.channel} holds {self.size} unacked events")
            self._entries.popitem(last=False)
        entry_id = self.ids.next()
        text = format_id(entry_id)
        entry = BufferEntry(
            entry_id,
            self.channel,
            request_id,
            stamp_frame(body, entry_id=text, channel=self.channel),
            body,
            self.clock(),
        )
        self._entries[entry_id] = entry
        return entry

    def get(self, entry_id: str) -> BufferEntry | None:
        try:
            return self._entries.get(parse_id(entry_id))
        except ValueError:
            return None

    def mark_acked(self, entry_id: str) -> bool:
        """Mark an entry acked; False if it is not (or no longer) kept."""
        entry = self.get(entry_id)
        if entry is None:
            return False
        entry.acked = True
        return True

    def after(self, since: str) -> list[BufferEntry]:
        """Every kept entry with an id greater than ``since``."""
        self.expire()
        cursor = parse_id(since)
        return [e for e in self._entries.values() if e.id > cursor]

    def unacked(self) -> list[BufferEntry]:
        """Every kept entry nobody has acked yet, oldest first."""
        self.expire()
        return [e for e in self._entries.values() if not e.acked]

    def __iter__(self) -> Iterator[BufferEntry]:
        self.expire()
        return iter(list(self._entries.values()))


@dataclass(frozen=True)
class BufferPolicy:
    """Which channels are buffered (fnmatch patterns, e.g. ``cli_*``), and the bounds."""

    patterns: tuple[str, ...] = ()
    size: int = 1000
    ttl: float = 3600.0

    @classmethod
    def parse(cls, spec: str | None, *, size: int, ttl: float) -> BufferPolicy:
        """``"cli_*,org_acme"`` -> a policy; ``None``/empty: nothing buffered."""
        patterns = tuple(p.strip() for p in (spec or "").split(",") if p.strip())
        return cls(patterns, size, ttl)

    def buffered(self, channel: str) -> bool:
        # Asked for every webhook: no generator when nothing is buffered (the default).
        return bool(self.patterns) and any(fnmatch.fnmatchcase(channel, p) for p in self.patterns)


class ChannelIds:
    """Message ids for events of unbuffered channels: increasing per channel in this process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._ids: dict[str, IdClock] = {}

    def next(self, channel: str) -> str:
        """The next id for ``channel``, as text (``<ms>-<seq>``)."""
        clock = self._ids.get(channel)
        if clock is None:
            if len(self._ids) > 10_000:  # bounded: ids of idle unbuffered channels restart from the clock
                self._ids.clear()
            clock = self._ids[channel] = IdClock(self.clock)
        ms, seq = clock.next()
        return f"{ms}-{seq}"  # format_id(), inlined: one per webhook


class BufferStore:
    """The buffers of one process (in-memory hub), created on the first event of a buffered channel.

    Channels whose every entry expired are forgotten, so memory is bounded by live buffered channels
    times ``size``.
    """

    def __init__(self, policy: BufferPolicy, *, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.clock = clock
        self._buffers: dict[str, ChannelBuffer] = {}

    def buffered(self, channel: str) -> bool:
        return self.policy.buffered(channel)

    def buffer(self, channel: str) -> ChannelBuffer | None:
        """The channel's buffer, or None if the channel has none yet (or is not buffered)."""
        buf = self._buffers.get(channel)
        if buf is not None and not len(buf):
            del self._buffers[channel]
            return None
        return buf

    def append(self, channel: str, request_id: str, body: str) -> BufferEntry:
        """Buffer ``body`` on a buffered channel. Raises :class:`BufferFull`."""
        buf = self._buffers.get(channel)
        if buf is None:
            buf = self._buffers[channel] = ChannelBuffer(
                channel, size=self.policy.size, ttl=self.policy.ttl, clock=self.clock
            )
        return buf.append(request_id, body)

    def mark_acked(self, channel: str, entry_id: str) -> bool:
        buf = self._buffers.get(channel)
        return buf is not None and buf.mark_acked(entry_id)

    def replay(self, channel: str, since: str | None) -> list[BufferEntry]:
        """What a new subscriber of ``channel`` gets first: entries after ``since``, or the unacked ones."""
        buf = self.buffer(channel)
        if buf is None:
            return []
        return buf.after(since) if since is not None else buf.unacked()

    def counts(self) -> dict[str, int]:
        entries = [e for b in self._buffers.values() for e in b]
        return {
            "buffered_channels": len(self._buffers),
            "buffered_events": len(entries),
            "buffered_unacked": sum(1 for e in entries if not e.acked),
        }
