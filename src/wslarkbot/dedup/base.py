"""The store interface of :mod:`wslarkbot.dedup`: :class:`Deduplicator`, :class:`ClaimState`, the defaults."""

from __future__ import annotations

import abc
import enum
import json
import threading
from collections import OrderedDict
from typing import Any

from ..exceptions import ConfigurationError

#: Feishu's retries span about 7.1 h (protocol.md §5); keys are remembered for 12 h.
DEFAULT_TTL = 12 * 3600.0
#: Bound on the number of remembered keys.
DEFAULT_MAX_ENTRIES = 10_000
#: How long a claim whose handler never reported back blocks re-delivery, when its process cannot be
#: checked (another host; see :mod:`wslarkbot.dedup`).
DEFAULT_CLAIM_TTL = 600.0
#: Callback responses larger than this (serialised) are not cached; a duplicate then gets ``{}``.
MAX_CACHED_RESPONSE_BYTES = 32 * 1024
#: Number of callback responses kept for duplicate callbacks.
DEFAULT_MAX_RESPONSES = 256


class ClaimState(str, enum.Enum):
    """What :meth:`Deduplicator.try_claim` found."""

    #: Unknown (or expired): now pending for the caller, who runs the handlers.
    NEW = "new"
    #: Another delivery is running the handlers: do not run them, do not answer (deliver again later).
    PENDING = "pending"
    #: The handlers succeeded: do not run them, acknowledge.
    DONE = "done"


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigurationError(f"{name} must be a positive number")


class Deduplicator(abc.ABC):
    """A store of event keys: :meth:`claim`, then :meth:`mark_done` or :meth:`release` (see the package).

    Every method is synchronous, cheap and thread-safe, so the dispatch flow can call it from the event
    loop and from handler threads alike. Subclasses implement :meth:`claim`, :meth:`release`,
    :meth:`seen`, :meth:`_mark_done` and ``__len__``; this base keeps the callback responses.

    Args:
        max_responses: callback responses kept (LRU, in memory only, each at most
            :data:`MAX_CACHED_RESPONSE_BYTES` serialised) to answer a duplicate callback.
    """

    def __init__(self, *, max_responses: int = DEFAULT_MAX_RESPONSES) -> None:
        if isinstance(max_responses, bool) or not isinstance(max_responses, int) or max_responses < 0:
            raise ConfigurationError("max_responses must be an integer >= 0")
        self.max_responses = max_responses
        self._responses: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._responses_lock = threading.Lock()

    @abc.abstractmethod
    def claim(self, key: str) -> bool:
        """Record ``key`` as pending, atomically; True when it was unknown (or expired): run the handlers.

        False means a duplicate: ``key`` is pending (another delivery is running) or done.
        """

    def try_claim(self, key: str) -> ClaimState:
        """:meth:`claim`, telling a pending duplicate from a done one (``Bot`` calls this).

        The built-in stores override it atomically. This default, for a store that implements only
        :meth:`claim`, cannot tell them apart and reports every duplicate as ``DONE`` (acknowledged, the
        behaviour before ``try_claim`` existed); override it to get ``PENDING``.
        """
        return ClaimState.NEW if self.claim(key) else ClaimState.DONE

    @abc.abstractmethod
    def release(self, key: str) -> None:
        """Forget a *pending* ``key`` so that a later delivery runs again; a done key stays done."""

    @abc.abstractmethod
    def seen(self, key: str) -> bool:
        """True when ``key`` is pending or done (and not expired). Records nothing."""

    @abc.abstractmethod
    def _mark_done(self, key: str) -> None:
        """Record ``key`` as done for ``ttl`` (also when it is not pending any more)."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of keys remembered (pending or done, not expired)."""

    def mark_done(self, key: str, response: dict[str, Any] | None = None) -> None:
        """The handlers of ``key`` succeeded: never run them again within ``ttl``.

        Args:
            key: the claimed key.
            response: a callback's response, kept (bounded) for :meth:`cached_response`.
        """
        self._mark_done(key)
        if response is not None and self.max_responses:
            self._remember_response(key, response)

    def _remember_response(self, key: str, response: dict[str, Any]) -> None:
        try:
            size = len(json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        except (TypeError, ValueError):
            return
        if size > MAX_CACHED_RESPONSE_BYTES:
            return
        with self._responses_lock:
            self._responses[key] = response
            self._responses.move_to_end(key)
            while len(self._responses) > self.max_responses:
                self._responses.popitem(last=False)

    def cached_response(self, key: str) -> dict[str, Any] | None:
        """The response :meth:`mark_done` kept for ``key``, or None (never kept, evicted, restarted)."""
        with self._responses_lock:
            return self._responses.get(key)

    def __bool__(self) -> bool:
        # __len__ would make an empty store falsy; ``if dedup:`` must mean "is there a store".
        return True

    def close(self) -> None:
        """Release resources (a database connection); the in-memory store needs nothing."""
        return None

    def __enter__(self) -> Deduplicator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
