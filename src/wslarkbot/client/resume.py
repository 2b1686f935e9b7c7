"""Resuming after a reconnect: the last message id seen per channel, and which message an answer is for.

No I/O. :class:`~wslarkbot.client.aio.AsyncClient` keeps one :class:`ResumeCursor` per instance (in
memory): it reconnects with ``?since=<channel>:<id>,...`` so a relay that buffers the channel
(docs/delivery.md) replays exactly the events after the last one this client received. Answers carry the
envelope's ``channel`` and ``id`` (:class:`~wslarkbot.wire.MessageRef`), so the relay marks a buffered event
acked even when the answer goes over a later connection than the envelope came on.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from .. import wire

__all__ = ["ResumeCursor"]


def _key(message_id: str) -> tuple[int, int] | None:
    ms, sep, seq = message_id.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        return None
    return int(ms), int(seq)


class ResumeCursor:
    """Last message id per channel, and the message each recent request id belongs to (bounded).

    Args:
        max_refs: request ids remembered for :meth:`ref` (the oldest are forgotten first).
    """

    def __init__(self, max_refs: int = 10_000) -> None:
        self._last: dict[str, str] = {}
        self._refs: collections.OrderedDict[str, wire.MessageRef] = collections.OrderedDict()
        self._max_refs = max_refs

    def seen(self, envelope: wire.Envelope) -> None:
        """Record an envelope received from the relay (ignored without ``id``/``channel``)."""
        channel, mid = envelope.channel, envelope.message_id
        if channel is None or mid is None or not wire.CHANNEL_RE.match(channel):
            return
        key = _key(mid)
        if key is None:
            return
        last = self._last.get(channel)
        if last is None or key > (_key(last) or (-1, -1)):
            self._last[channel] = mid
        rid = envelope.request_id
        if rid:
            self._refs[rid] = wire.MessageRef(channel, mid)
            self._refs.move_to_end(rid)
            while len(self._refs) > self._max_refs:
                self._refs.popitem(last=False)

    def last(self, channel: str) -> str | None:
        return self._last.get(channel)

    def since(self, channels: Iterable[str]) -> str:
        """``"<ch>:<id>,..."`` for the given channels this cursor has seen ("" if none)."""
        return ",".join(f"{ch}:{self._last[ch]}" for ch in channels if ch in self._last)

    def ref(self, request_id: str) -> wire.MessageRef | None:
        """The message an answer to ``request_id`` is for, if the envelope carried one."""
        return self._refs.get(request_id)
