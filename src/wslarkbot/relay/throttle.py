"""Failed-login throttling for the relay's basic auth (issue 19). No I/O; thread-safe (auth runs in a
worker thread).

Failures are counted per key (the client's address, and the user name tried) in a sliding window. Once a
key has ``limit`` failures in the last ``window`` seconds, further attempts on it are refused with 429 and
``Retry-After`` *before* any password is checked, so guessing costs the guesser time and the relay no
bcrypt work. A success clears the client address's failures. Memory is bounded: at most ``max_keys`` keys
are remembered (the least recently used are forgotten first).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Hashable

__all__ = ["FailureThrottle"]


class FailureThrottle:
    """See the module docstring. ``limit`` 0 disables it."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._failures: collections.OrderedDict[Hashable, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def retry_after(self, *keys: Hashable) -> int | None:
        """Seconds until one more attempt on ``keys`` is allowed, or None if it is allowed now."""
        if not self.limit:
            return None
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._failures.get(key)
                if times is None:
                    continue
                while times and times[0] <= now - self.window:
                    times.popleft()
                if len(times) >= self.limit:
                    wait = max(wait, times[0] + self.window - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def failed(self, *keys: Hashable) -> None:
        """Record one failed attempt on each of ``keys``."""
        if not self.limit:
            return
        now = self._clock()
        with self._lock:
            for key in keys:
                times = self._failures.pop(key, None)
                if times is None:
                    times = collections.deque(maxlen=self.limit)
                times.append(now)
                self._failures[key] = times  # most recently used last
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, key: Hashable) -> None:
        """Forget ``key``'s failures (a client that got its password right)."""
        with self._lock:
            self._failures.pop(key, None)
