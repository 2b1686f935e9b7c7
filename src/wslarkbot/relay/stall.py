"""The stall watch: buffered events nobody acks although their bot is connected (issue 16, docs/delivery.md).

A 200 for a buffered event promises delivery. If an event stays unacked while a subscriber of its channel
has been connected to this node for as long, something between the hub and that subscriber is stuck
(a lost fan-out, a bot that never acks): the relay keeps the event, but only an operator can tell why.
Every ``buffer_stall_after`` / 2 seconds (0.5 s to 30 s) this task asks the hub
(:meth:`~.hub.Hub.stalled`), logs one warning per newly stalled event (channel and id, never the
payload) and keeps the count for ``GET /status`` (``buffer_stalled``) and ``/metrics``
(``wslarkbot_buffer_stalled_events``).
"""

from __future__ import annotations

import asyncio
import collections

from .limits import LimitExceeded
from .state import RelayState, log

__all__ = ["check_interval", "watch_stalls"]

#: most event ids remembered as already reported (older ones may be reported again)
_REMEMBERED = 10_000


def check_interval(stall_after: float) -> float:
    """Seconds between two checks for a threshold of ``stall_after`` seconds."""
    return min(30.0, max(0.5, stall_after / 2))


async def watch_stalls(state: RelayState) -> None:
    """Run the checks until cancelled (started by the app when buffering and the watch are on)."""
    after = state.config.buffer_stall_after
    reported: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
    while True:
        await asyncio.sleep(check_interval(after))
        try:
            stalls = await state.hub.stalled(after)
        except LimitExceeded:  # the backend is down: the hub logs that, and nothing is being delivered
            continue
        state.buffer_stalled = len(stalls)
        for stall in stalls:
            key = (stall.channel, stall.entry_id)
            if key in reported:
                continue
            reported[key] = None
            if len(reported) > _REMEMBERED:
                reported.popitem(last=False)
            log.warning(
                "buffered event %s of channel %s unacked for %.0f s while %d subscriber(s) of the channel "
                "are connected to this node (buffer_stall_after=%g); it stays buffered and is replayed "
                "when they reconnect (docs/delivery.md)",
                stall.entry_id,
                stall.channel,
                stall.age,
                stall.subscribers,
                after,
            )
