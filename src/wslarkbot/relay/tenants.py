"""Per-tenant limits: events per second and subscribers per channel (an ``org_*`` or an app), so one noisy
tenant of a shared relay cannot starve the rest (docs/deploy.md "A public multi-tenant relay"). No I/O.

Configured in the config file only (``relay/config_file.py``), one table per channel, and ``"*"`` for
every channel without one::

    [tenants."*"]
    events_per_second = 20       # a token bucket: bursts up to one second's worth
    max_subscribers = 10

    [tenants.org_acme]
    events_per_second = 200

An event over its channel's rate is answered **429** with ``Retry-After`` (Feishu retries it); a
subscription over its channel's ``max_subscribers`` is refused **503** with ``Retry-After``. Both are
counted per node (with ``--redis``, each node enforces its own share). Reloaded on SIGHUP.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigurationError
from .limits import LimitExceeded

__all__ = ["DEFAULT_KEY", "MAX_BUCKETS", "TenantGate", "TenantLimit", "parse_tenants"]

#: The table that applies to every channel without one of its own.
DEFAULT_KEY = "*"
#: Most channels whose rate is tracked at once (the least recently seen one is dropped).
MAX_BUCKETS = 100_000


@dataclass(frozen=True)
class TenantLimit:
    """One channel's limits; None: not limited."""

    events_per_second: float | None = None
    max_subscribers: int | None = None


def parse_tenants(table: Any, where: str) -> dict[str, TenantLimit]:
    """The ``[tenants]`` table of a config file.

    Raises:
        ConfigurationError: not a table of tables, an unknown key, or a value that is not a positive number.
    """
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"{where}: tenants must be a table of [tenants.<channel>] tables")
    out: dict[str, TenantLimit] = {}
    for channel, limits in table.items():
        if not isinstance(limits, Mapping):
            raise ConfigurationError(f"{where}: [tenants.{channel}] must be a table")
        unknown = set(limits) - {"events_per_second", "max_subscribers"}
        if unknown:
            raise ConfigurationError(
                f"{where}: [tenants.{channel}] has unknown keys {sorted(unknown)}; "
                "allowed: events_per_second, max_subscribers"
            )
        rate = limits.get("events_per_second")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0):
            raise ConfigurationError(f"{where}: [tenants.{channel}] events_per_second must be a number > 0")
        subs = limits.get("max_subscribers")
        if subs is not None and (isinstance(subs, bool) or not isinstance(subs, int) or subs < 1):
            raise ConfigurationError(f"{where}: [tenants.{channel}] max_subscribers must be an integer >= 1")
        out[str(channel)] = TenantLimit(float(rate) if rate is not None else None, subs)
    return out


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class TenantGate:
    """Applies :class:`TenantLimit` tables. Not thread-safe; use from the relay's event loop.

    Args:
        limits: channel (or ``"*"``) -> its limits.
        clock: monotonic seconds (injected in tests).
    """

    def __init__(
        self, limits: Mapping[str, TenantLimit], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = dict(limits)
        self._default = self._limits.get(DEFAULT_KEY)
        self._clock = clock
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()

    def limit_for(self, channel: str) -> TenantLimit | None:
        """The limits of ``channel``: its own table, else ``"*"``, else None."""
        return self._limits.get(channel, self._default)

    def check_event(self, channel: str) -> LimitExceeded | None:
        """Take one event from ``channel``'s bucket; the 429 when it is empty (None: go on)."""
        if not self._limits:
            return None  # the default: nothing configured, nothing to do per webhook
        limit = self.limit_for(channel)
        if limit is None or limit.events_per_second is None:
            return None
        rate = limit.events_per_second
        burst = max(1.0, rate)
        now = self._clock()
        bucket = self._buckets.get(channel)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.popitem(last=False)
            bucket = self._buckets[channel] = _Bucket(burst, now)
        else:
            self._buckets.move_to_end(channel)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        wait = max(1, math.ceil((1.0 - bucket.tokens) / rate))
        return LimitExceeded(
            429,
            "tenant_events_per_second",
            f"channel {channel} is over its {rate:g} events per second",
            retry_after=wait,
        )

    def check_subscriber(self, channel: str, current: int) -> LimitExceeded | None:
        """The 503 when ``channel`` already has its ``max_subscribers`` here (None: go on)."""
        if not self._limits:
            return None
        limit = self.limit_for(channel)
        if limit is None or limit.max_subscribers is None or current < limit.max_subscribers:
            return None
        return LimitExceeded(
            503,
            "tenant_max_subscribers",
            f"channel {channel} already has its {limit.max_subscribers} subscribers",
        )
