"""Bounded, off-loop handling of envelopes and the reply/ack rules of protocol 2.

The receive loop calls :meth:`Dispatcher.submit` for each envelope. ``submit`` waits while
``max_in_flight`` envelopes are being handled (backpressure: the loop stops reading, the relay's buffer
fills up, the relay sheds load), then starts one task per envelope and returns. Each task:

1. ``bot.parse(envelope)`` -- verification only, on the loop (cheap). A ``RequestRejected`` is logged at
   warning level with the request id, the check that failed and the setting to look at
   (:func:`~wslarkbot.exceptions.rejection_hint`), and answered with a ``nack``: the relay answers Feishu
   at once, the same non-2xx whatever failed (no oracle), and Feishu retries while the operator fixes the
   configuration.
2. runs the bot (``bot.adispatch`` / ``bot.aprocess_message``): ``async def`` handlers on the loop,
   ``def`` handlers in the bounded executor, so a slow handler never blocks heartbeats or other bots.
3. answers through a :class:`ReplySink`:

   * a challenge or callback (``FeishuRequest.expects_reply``): ``Reply`` with the response when the bot
     is done; nothing early, however long it takes (only the response is useful to Feishu). A callback
     whose handler raised gets a ``Nack`` (the relay answers 500 at once, Feishu shows its error).
   * an event: ``Ack`` when the handler finishes, or ``ack_after`` seconds after receipt if it is still
     running (so Feishu, which wants a 200 within 3 s, does not retry while an LLM thinks), whichever
     comes first; exactly one answer. An event whose handler raised before that is answered with a
     ``Nack``: the relay answers Feishu 500 and Feishu delivers it again (the bot's dedup forgot it, so it
     runs again). ``ack_failures=True`` acks it instead (at most once). A handler that fails after the
     early ack is logged as such: Feishu was answered and will not retry.
   * the original protocol: only non-None results are sent (HTTP POST ``/sub/<request_id>``); there are
     no acks, except for unsigned envelopes (no ``X-Lark-Signature``: an app without an Encrypt Key),
     which are acked on receipt (``ack_after=0``) by POSTing ``{}``: an original relay answers a signed
     request as soon as it has published it, but holds an unsigned one open like a challenge, ~1 s,
     until something is POSTed (deploy/nchan). Our relay tells plaintext events from challenges and
     waits for their ack as long as for signed ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, Protocol, runtime_checkable

from ..events import FeishuRequest
from ..exceptions import ConfigurationError, RequestRejected, rejection_hint
from .status import ClientStatus

__all__ = ["BotLike", "Dispatcher", "ReplySink"]

logger = logging.getLogger("wslarkbot.client")


@runtime_checkable
class BotLike(Protocol):
    """What the client needs from a bot (``wslarkbot.Bot`` and its subclasses)."""

    app_id: str

    def parse(self, message: Any) -> FeishuRequest: ...

    async def aprocess_message(self, message: Any, *, executor: Executor | None = None) -> Any: ...


class ReplySink(Protocol):
    """Where answers go: the WebSocket (protocol 2) or HTTP POSTs (original protocol)."""

    #: True when the relay understands acks (protocol 2).
    acks: bool

    async def reply(self, request_id: str, body: Any) -> None: ...

    async def ack(self, request_id: str) -> None: ...

    async def nack(self, request_id: str) -> None: ...


async def _run_bot(
    bot: BotLike, message: Mapping[str, Any], executor: Executor, request: FeishuRequest
) -> tuple[Any, bool, bool]:
    """(response, handler_failed, no_answer). Uses ``adispatch`` when the bot has it, to know about
    failures and about ``DispatchResult.no_answer`` (dedup: the event is still running elsewhere), and
    hands it the request ``parse`` verified, so the envelope is not verified and decrypted again."""
    adispatch = getattr(bot, "adispatch", None)
    if adispatch is not None:
        result = await adispatch(message, executor=executor, request=request)
        return result.response, bool(result.handler_failed), bool(getattr(result, "no_answer", False))
    return await bot.aprocess_message(message, executor=executor), False, False


class Dispatcher:
    """Runs envelopes off the receive loop, at most ``max_in_flight`` at once.

    Args:
        executor: runs ``def`` handlers (the client's bounded ``ThreadPoolExecutor``).
        max_in_flight: envelopes handled concurrently; ``submit`` waits when this many are running.
        ack_after: seconds after receipt at which a still-running event is acked.
        status: counters to update.
        clock: monotonic seconds (``loop.time`` by default); ``received_at`` values use it.
        ack_failures: ack an event whose handler raised, as if it succeeded (at most once: Feishu does not
            deliver it again); default False: nack it, so the relay answers non-2xx and Feishu retries.
    """

    def __init__(
        self,
        *,
        executor: Executor,
        max_in_flight: int = 64,
        ack_after: float = 2.5,
        status: ClientStatus | None = None,
        clock: Callable[[], float] | None = None,
        ack_failures: bool = False,
    ) -> None:
        if max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if ack_after < 0:
            raise ConfigurationError(f"ack_after must be >= 0, got {ack_after}")
        self._executor = executor
        self._max = max_in_flight
        self._ack_after = ack_after
        self._status = status or ClientStatus()
        self._clock = clock
        self._ack_failures = ack_failures
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    @property
    def in_flight(self) -> int:
        """Envelopes being handled now."""
        return len(self._tasks)

    async def submit(
        self,
        bot: BotLike,
        message: Mapping[str, Any],
        sink: ReplySink,
        *,
        request_id: str,
        received_at: float | None = None,
        ack_after: float | None = None,
    ) -> asyncio.Task[None]:
        """Wait for a free slot, then start handling ``message`` (the envelope as a dict) in a task.

        ``ack_after`` overrides the dispatcher's for this envelope (0: ack an event on receipt).
        """
        if received_at is None:
            received_at = self.now()
        if ack_after is None:
            ack_after = self._ack_after
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max)
        await self._slots.acquire()
        task = asyncio.create_task(
            self._handle(bot, message, sink, request_id, received_at, ack_after),
            name=f"wslarkbot-request-{request_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._slots is not None:
            self._slots.release()
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover - _handle catches
            logger.error("request task failed", exc_info=task.exception())

    async def drain(self, timeout: float | None) -> bool:
        """Wait until every envelope is handled (replies sent). True when none is left."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        return not self._tasks

    def cancel(self) -> None:
        """Request cancellation of every envelope in flight (``def`` handlers already running in a thread
        run to their end, unanswered)."""
        for task in self._tasks:
            task.cancel()

    async def cancel_all(self) -> None:
        """Cancel what is still running and wait for the tasks to end."""
        tasks = set(self._tasks)
        self.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(
        self,
        bot: BotLike,
        message: Mapping[str, Any],
        sink: ReplySink,
        rid: str,
        received_at: float,
        ack_after: float,
    ) -> None:
        try:
            request = bot.parse(message)
        except RequestRejected as exc:
            await self._rejected(bot, rid, exc, sink)
            return
        early_ack = sink.acks and not request.expects_reply
        work = asyncio.ensure_future(_run_bot(bot, message, self._executor, request))
        acked = False
        try:
            if early_ack:
                remaining = ack_after - (self.now() - received_at)
                done, _ = await asyncio.wait({work}, timeout=max(0.0, remaining))
                if not done:
                    logger.debug("request %s: handler still running at ack_after, acking", rid)
                    await sink.ack(rid)
                    acked = True
            response, failed, no_answer = await work
        except RequestRejected as exc:
            await self._rejected(bot, rid, exc, sink)
            return
        except asyncio.CancelledError:
            work.cancel()
            raise
        except Exception:
            logger.exception("request %s for %s: bot failed", rid, bot.app_id)
            failed, response, no_answer = True, None, False
        if no_answer:  # still running elsewhere (dedup): no ack, no reply; the relay answers 504/hands over
            logger.info("request %s: in progress elsewhere; not answered, to be delivered again", rid)
            return
        if acked:
            if failed:
                logger.error(
                    "request %s for %s: handler failed after the event was acked at ack_after (%g s): "
                    "Feishu was answered 200 and will not deliver it again",
                    rid,
                    bot.app_id,
                    ack_after,
                )
            elif response is not None:
                logger.warning("request %s: late response dropped (event already acked)", rid)
            return
        if response is not None:
            await sink.reply(rid, response)
        elif failed and (request.expects_reply or not self._ack_failures):
            # The relay answers Feishu non-2xx at once: an event is delivered again (the bot's dedup
            # forgot it), a callback shows its error now instead of at its deadline.
            logger.warning("request %s: handler failed; answered with a nack", rid)
            await sink.nack(rid)
        elif sink.acks:
            await sink.ack(rid)

    async def _rejected(self, bot: BotLike, rid: str, exc: RequestRejected, sink: ReplySink) -> None:
        self._status.incr("rejected")
        # The exception's class says which check failed and what to look at; its text holds no secrets,
        # and payload details stay out of the log anyway. The relay is told only "not handled".
        logger.warning(
            "request %s for %s rejected: %s; answered with a nack",
            rid,
            bot.app_id,
            rejection_hint(exc),
        )
        await sink.nack(rid)
