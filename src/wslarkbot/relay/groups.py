"""Competing consumers: choosing one member of a subscriber group for each event. No I/O.

A subscription with ``?group=<name>`` joins group ``<name>`` on each of its channels. Per channel and
group, each event goes to **one** member: the one with the fewest unanswered group deliveries, ties broken
round-robin. Broadcast subscribers (no group) all get every event, as before. docs/delivery.md has the
guarantees; :class:`~.hub.InMemoryHub` and :class:`~.redis_hub.RedisHub` use this class for their local
members.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

__all__ = ["GROUP_RE", "GroupRing", "InFlight", "InFlightTable", "Member"]

#: Group names: the channel-name alphabet.
GROUP_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")


class Member(Protocol):
    """What the ring needs from a member: a stable id and its unanswered group deliveries."""

    @property
    def id(self) -> int: ...

    @property
    def load(self) -> int: ...


M = TypeVar("M", bound=Member)


class GroupRing(Generic[M]):
    """The members of one group on one channel, in join order."""

    def __init__(self) -> None:
        self._members: dict[int, M] = {}
        self._turn = 0

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: M) -> None:
        self._members[member.id] = member

    def remove(self, member: M) -> None:
        self._members.pop(member.id, None)

    def members(self) -> list[M]:
        return list(self._members.values())

    def pick(self, exclude: Collection[int] = ()) -> M | None:
        """The member to get the next event: least loaded, round-robin among equals; None if none left."""
        candidates = [m for m in self._members.values() if m.id not in exclude]
        if not candidates:
            return None
        least = min(m.load for m in candidates)
        tied = [m for m in candidates if m.load == least]
        self._turn += 1
        return tied[self._turn % len(tied)]


@dataclass
class InFlight:
    """An event handed to one group member (or a replayed buffered entry) that it has not answered yet.

    Kept on the subscriber so that, if its connection closes first, the hub can hand the event to another
    member while Feishu's deadline (or the buffer) still allows.
    """

    channel: str
    group: str
    request_id: str
    body: str  # the unstamped envelope
    entry_id: str
    attempt: int = 0
    replay: bool = False
    buffered: bool = False
    since: float = field(default_factory=time.monotonic)


class InFlightTable:
    """A subscriber's :class:`InFlight` entries, bounded (the oldest are forgotten past ``limit``)."""

    def __init__(self, limit: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._items: dict[str, InFlight] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: InFlight) -> None:
        self._items.pop(item.request_id, None)
        self._items[item.request_id] = item
        while len(self._items) > self.limit:
            del self._items[next(iter(self._items))]

    def pop(self, request_id: str) -> InFlight | None:
        return self._items.pop(request_id, None)

    def get(self, request_id: str) -> InFlight | None:
        return self._items.get(request_id)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._items

    def drain(self) -> list[InFlight]:
        """Everything still unanswered, oldest first; the table is empty afterwards."""
        items = list(self._items.values())
        self._items.clear()
        return items
