"""The local fan-out: this process's subscribers per channel and group, and offering them a frame. No I/O.

Both hubs compose one :class:`LocalFanout`: the in-memory hub (:mod:`.hub`) for everything, the Redis hub
(:mod:`.redis_hub`) for the subscribers connected to its node, while Redis carries what crosses nodes.

Fan-out is cheap: the envelope is encoded (and stamped with its message id) once per webhook and the same
``str`` is appended to each subscriber's outgoing buffer (no copy, no task per message). Per channel, every
broadcast subscriber gets each event and each subscriber group one member (:mod:`.groups`). A subscriber
whose buffer is full refuses the frame (:meth:`~.subscriber.Subscriber.offer`): it is not counted as
delivered, and a group offers it to its next member.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .buffer import BufferEntry
from .groups import GroupRing, InFlight
from .limits import LimitExceeded
from .subscriber import Event, Subscriber

__all__ = ["LocalFanout"]


class LocalFanout:
    """Who is subscribed here to which channel (broadcast, or a member of a group), and the offers to them.

    Args:
        max_subscribers_per_channel: :meth:`attach` refuses one more (503).
        handed_over: called ``(channel, entry_id)`` when a buffered event went to an original-protocol
            subscriber (they never ack: handing it over is as far as it goes); the hub marks it acked.
    """

    def __init__(
        self, *, max_subscribers_per_channel: int, handed_over: Callable[[str, str], object]
    ) -> None:
        self.max_subscribers_per_channel = max_subscribers_per_channel
        self.handed_over = handed_over
        self._channels: dict[str, dict[int, Subscriber]] = {}
        self._groups: dict[tuple[str, str], GroupRing[Subscriber]] = {}
        #: channel -> its groups with members here (insertion-ordered), so fan-out does not scan _groups
        self._channel_groups: dict[str, dict[str, None]] = {}
        self._subs: dict[int, Subscriber] = {}
        #: protocol-2 subscribers per channel (they reply or ack; original clients never do)
        self._answering: dict[str, int] = {}

    # --- who is here --------------------------------------------------------------------------------

    def attach(self, sub: Subscriber) -> None:
        """Register ``sub`` on its channels (and group rings).

        Raises:
            LimitExceeded: a channel already has ``max_subscribers_per_channel`` subscribers (503).
        """
        for ch in sub.channels:
            if len(self._channels.get(ch, ())) >= self.max_subscribers_per_channel:
                raise LimitExceeded(
                    503,
                    "max_subscribers_per_channel",
                    f"channel {ch} already has {self.max_subscribers_per_channel} subscribers",
                )
        for ch in sub.channels:
            self._channels.setdefault(ch, {})[sub.id] = sub
            if sub.group is not None:
                self._groups.setdefault((ch, sub.group), GroupRing()).add(sub)
                self._channel_groups.setdefault(ch, {})[sub.group] = None
            if sub.protocol >= 2:
                self._answering[ch] = self._answering.get(ch, 0) + 1
        self._subs[sub.id] = sub

    def detach(self, sub: Subscriber) -> list[InFlight]:
        """Remove ``sub`` (idempotent); returns its unanswered *group* events, for the hub to hand on."""
        if self._subs.pop(sub.id, None) is None:
            return []
        for ch in sub.channels:
            members = self._channels.get(ch)
            if members is not None:
                members.pop(sub.id, None)
                if not members:
                    del self._channels[ch]
            if sub.protocol >= 2:
                left = self._answering.get(ch, 0) - 1
                if left > 0:
                    self._answering[ch] = left
                else:
                    self._answering.pop(ch, None)
            if sub.group is not None:
                ring = self._groups.get((ch, sub.group))
                if ring is not None:
                    ring.remove(sub)
                    if not len(ring):
                        del self._groups[(ch, sub.group)]
                        names = self._channel_groups[ch]
                        del names[sub.group]
                        if not names:
                            del self._channel_groups[ch]
        return [item for item in sub.inflight.drain() if item.group]

    def may_answer(self, channel: str) -> bool:
        """Whether a protocol-2 subscriber (one that replies or acks) of ``channel`` is connected here."""
        return channel in self._answering

    def subscriber_count(self, channel: str) -> int:
        """How many subscribers ``channel`` has here."""
        return len(self._channels.get(channel, ()))

    def has_subscribers(self, channel: str) -> bool:
        """Whether ``channel`` has a subscriber here."""
        return channel in self._channels

    def groups_of(self, channel: str) -> list[str]:
        """The groups with members on ``channel`` here."""
        return list(self._channel_groups.get(channel, ()))

    def subscribers(self) -> list[Subscriber]:
        """Every subscriber connected here."""
        return list(self._subs.values())

    def counts(self) -> dict[str, int]:
        """``channels`` with subscribers here and ``subscribers``."""
        return {"channels": len(self._channels), "subscribers": len(self._subs)}

    def watched(self, older_than: float, buffered: Callable[[str], bool]) -> dict[str, int]:
        """Buffered channels with subscribers here connected for ``older_than`` seconds, and how many."""
        now = time.monotonic()  # Subscriber.connected_at is monotonic
        out: dict[str, int] = {}
        for channel, members in self._channels.items():
            if buffered(channel):
                n = sum(1 for sub in members.values() if now - sub.connected_at >= older_than)
                if n:
                    out[channel] = n
        return out

    # --- offers -------------------------------------------------------------------------------------

    def publish(self, event: Event) -> list[Subscriber]:
        """Offer ``event`` to every broadcast subscriber of its channel and one member of each group here;
        returns those that accepted it."""
        out = self.broadcast(event)
        groups = self._channel_groups.get(event.channel)
        if groups:
            for group in list(groups):
                out += self.offer_group(event, group)
        return out

    def broadcast(self, event: Event) -> list[Subscriber]:
        """Offer ``event`` to every subscriber of its channel without a group."""
        members = self._channels.get(event.channel)
        if not members:
            return []
        # list(): an overload callback may unsubscribe while we iterate.
        return [sub for sub in list(members.values()) if sub.group is None and self._offer(sub, event)]

    def offer_group(
        self, event: Event, group: str, *, attempt: int = 0, replay: bool = False
    ) -> list[Subscriber]:
        """Offer ``event`` to one member of ``group`` (the next one if a member is overloaded)."""
        ring = self._groups.get((event.channel, group))
        tried: set[int] = set()
        while ring is not None:
            member = ring.pick(tried)
            if member is None:
                break
            if self._offer(member, event, group=group, attempt=attempt, replay=replay):
                return [member]
            tried.add(member.id)
        return []

    def replay_candidates(
        self, sub: Subscriber, channel: str, entries: list[BufferEntry]
    ) -> list[BufferEntry]:
        """Which of ``entries`` ``sub`` may be replayed: a broadcast subscriber all of them, a group member
        the unacked ones no other member of its group here is handling (``since`` is then a lower bound)."""
        if sub.group is None:
            return entries
        ring = self._groups.get((channel, sub.group))
        others = [m for m in ring.members() if m is not sub] if ring else []
        return [e for e in entries if not e.acked and not any(e.request_id in m.inflight for m in others)]

    def offer_replay(self, sub: Subscriber, entry: BufferEntry) -> bool:
        """Send a buffered entry to ``sub`` as a replay (``"replay": true``)."""
        event = Event(entry.channel, entry.request_id, entry.id_text, entry.body, buffered=True)
        return self._offer(sub, event, group=sub.group or "", replay=True)

    def _offer(
        self, sub: Subscriber, event: Event, *, group: str = "", attempt: int = 0, replay: bool = False
    ) -> bool:
        # Replays are never held back as duplicates of themselves (Subscriber.release): no key.
        if not sub.offer(event.frame(replay=replay), None if replay else event.key, replay=replay):
            return False
        if event.buffered:
            sub.note(event.channel, event.entry_id)
        if sub.protocol >= 2 and (group or event.buffered):
            sub.inflight.add(
                InFlight(
                    event.channel,
                    group,
                    event.request_id,
                    event.body,
                    event.entry_id,
                    attempt=attempt,
                    replay=replay,
                    buffered=event.buffered,
                )
            )
        elif event.buffered and sub.protocol < 2:
            self.handed_over(event.channel, event.entry_id)
        return True
