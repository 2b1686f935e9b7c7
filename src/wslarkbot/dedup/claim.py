"""Claiming an event in a :mod:`wslarkbot.dedup` store: its key, :func:`claim_event`, :class:`Claim`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..events import CallbackV2, EventV1, FeishuEvent, LegacyCardAction, MessageEvent
from ..exceptions import ConfigurationError
from .base import ClaimState, Deduplicator
from .memory import MemoryDeduplicator

logger = logging.getLogger("wslarkbot.dedup")


def resolve_dedup(value: bool | Deduplicator | None) -> Deduplicator | None:
    """What ``Bot(dedup=...)`` accepts: None/False (off), True (:class:`MemoryDeduplicator` defaults),
    or a :class:`Deduplicator`.

    Raises:
        ConfigurationError: anything else (a truthy object must not silently become the default store).
    """
    if value is None or value is False:
        return None
    if value is True:
        return MemoryDeduplicator()
    if isinstance(value, Deduplicator):
        return value
    raise ConfigurationError(f"dedup must be None, True, False or a Deduplicator, not {type(value).__name__}")


def key_kind(event: FeishuEvent) -> str:
    """What the event's key is made of, for logs (never the content): ``message_id``, ``event_id``,
    ``uuid``, ``card_token`` (legacy card callbacks) or ``content_hash``."""
    if isinstance(event, MessageEvent):
        return "message_id"
    if isinstance(event, EventV1):
        return "uuid"
    if isinstance(event, LegacyCardAction):
        return "card_token"
    if isinstance(event, CallbackV2) and not event.event_id:
        return "content_hash"
    return "event_id"


def event_key(app_id: str, event: FeishuEvent) -> str | None:
    """``f"{app_id}:{event.dedup_key}"``, or None when the event has no key (never deduplicated)."""
    key = event.dedup_key
    return f"{app_id}:{key}" if key else None


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim_event` for one delivery; call :meth:`finish` once its handlers ran.

    Attributes:
        store: the deduplicator, or None (dedup off: every method is a no-op).
        key: the event's key, or None (no key: never deduplicated).
        duplicate: True when the handlers must not run.
        in_progress: a duplicate of a delivery still running (the key is *pending*): send no answer at
            all, so that the event is delivered again later (:class:`ClaimState`).
    """

    store: Deduplicator | None
    key: str | None
    duplicate: bool = False
    in_progress: bool = False

    def duplicate_response(self, event: FeishuEvent) -> dict[str, Any] | None:
        """The answer to a *done* duplicate: None for an event (acked), the cached response or ``{}`` for
        a callback. (An ``in_progress`` one gets no answer at all.)"""
        if not event.is_callback:
            return None
        cached = self.store.cached_response(self.key) if self.store and self.key else None
        return dict(cached) if cached is not None else {}

    def finish(self, ok: bool, response: dict[str, Any] | None = None) -> None:
        """``ok``: the handlers succeeded (mark done, keeping a callback's ``response``); otherwise
        release the claim so that a retry runs them again. No-op for a duplicate or without a key."""
        if self.store is None or self.key is None or self.duplicate:
            return
        if ok:
            self.store.mark_done(self.key, response)
        else:
            self.store.release(self.key)


def claim_event(store: Deduplicator | None, app_id: str, event: FeishuEvent, request_id: str = "-") -> Claim:
    """Claim ``event`` in ``store`` before its handlers run; logs a duplicate at info (key kind only).

    Example (what ``Bot``'s dispatch flow does)::

        claim = claim_event(self._dedup, self.app_id, event, request_id)
        if claim.in_progress:  # still running elsewhere: the transport must answer nothing at all
            return DispatchResult(request, None, skipped="in-progress", no_answer=True)
        if claim.duplicate:
            return claim.duplicate_response(event)
        try:
            response, failed = run_handlers()
        except BaseException:
            claim.finish(False)
            raise
        claim.finish(not failed, response)
    """
    if store is None:
        return Claim(None, None)
    key = event_key(app_id, event)
    if key is None:
        return Claim(store, key)
    state = store.try_claim(key)
    if state is ClaimState.NEW:
        return Claim(store, key)
    if state is ClaimState.PENDING:
        logger.info(
            "request %s: %s (same %s) still in progress elsewhere: not handled again, not answered "
            "(to be delivered again)",
            request_id,
            event.event_type,
            key_kind(event),
        )
        return Claim(store, key, duplicate=True, in_progress=True)
    logger.info(
        "request %s: duplicate %s (same %s) not handled again", request_id, event.event_type, key_kind(event)
    )
    return Claim(store, key, duplicate=True)
