"""Reconnection delays: exponential backoff with full jitter. No I/O.

A *reconnect policy* is a zero-argument callable returning an iterator of delays in seconds. The client
asks the policy for a fresh iterator after every good connection (one that delivered a protocol-2 ``hello``
or stayed up for ``stable_after`` seconds) and takes the next delay after every failure. When the iterator
is exhausted the client gives up (``ReconnectGaveUp``); the default policy never ends.

Full jitter (delay uniform in ``[0, min(maximum, initial * factor**n)]``) spreads the reconnections of many
bots after a relay restart ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015).

Example::

    AsyncClient(bot, reconnect_delays=lambda: backoff(initial=0.1, maximum=2.0))
    AsyncClient(bot, reconnect_delays=lambda: iter([1, 1, 1]))   # three retries, then give up
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from ..exceptions import ConfigurationError

__all__ = [
    "DEFAULT_FACTOR",
    "DEFAULT_INITIAL",
    "DEFAULT_MAXIMUM",
    "ReconnectPolicy",
    "backoff",
    "constant",
]

DEFAULT_INITIAL = 0.5
DEFAULT_MAXIMUM = 30.0
DEFAULT_FACTOR = 2.0

#: A factory of delay iterators; called again to reset the backoff.
ReconnectPolicy = Callable[[], Iterator[float]]


def backoff(
    initial: float = DEFAULT_INITIAL,
    maximum: float = DEFAULT_MAXIMUM,
    factor: float = DEFAULT_FACTOR,
    *,
    jitter: bool = True,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield delays forever: ``min(maximum, initial * factor**n)`` for n = 0, 1, 2, ..., each replaced by
    a uniform draw in ``[0, that]`` when ``jitter`` is true.

    Raises:
        ConfigurationError: ``initial`` <= 0, ``maximum`` < ``initial`` or ``factor`` < 1 (checked on
            the first ``next()``).
    """
    if initial <= 0 or maximum < initial or factor < 1:
        raise ConfigurationError(
            f"backoff needs 0 < initial <= maximum and factor >= 1, got {initial}, {maximum}, {factor}"
        )
    draw = (rng or random.SystemRandom()).uniform
    ceiling = initial
    while True:
        yield draw(0.0, ceiling) if jitter else ceiling
        ceiling = min(maximum, ceiling * factor)


def constant(delay: float) -> Iterator[float]:
    """Yield ``delay`` forever (the slow retry after an authentication failure)."""
    if delay < 0:
        raise ConfigurationError(f"delay must be >= 0, got {delay}")
    while True:
        yield delay
