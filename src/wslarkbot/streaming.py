"""Stream text into a message card: send a "thinking..." card, then update it as the text grows.

Two ways to update, chosen by ``mode``:

* ``"cardkit"``: Feishu's CardKit (docs/openapi.md "CardKit"): the card is a JSON 2.0 card *entity* in
  streaming mode; each update sends the element's text so far with a growing ``sequence``, and Feishu types
  out what is new; the final update replaces the card with streaming mode off. Built for LLM answers.
* ``"patch"``: the message's card is replaced (``PATCH /im/v1/messages/:id``) with each update; Feishu
  allows 5 per second per message (protocol.md §8).
* ``"auto"`` (the default): CardKit, falling back to PATCH when the card entity cannot be created (an app
  without the CardKit permission, an older deployment); a custom 1.0 ``render`` always uses PATCH.

A token stream produces far more updates than either allows. :class:`CardStream` (no I/O) coalesces them:
at most ``max_updates_per_second`` (default 4 for PATCH, 8 for CardKit) sends per card, each carrying the
*latest* text, and the final state always sent last. Two thin fronts do the I/O with the same methods,
:class:`StreamingCard` (blocking, ``bot.api``) and :class:`AsyncStreamingCard` (asyncio,
``bot.async_api``)::

    @bot.on_text
    async def answer(event: MessageEvent) -> None:
        card = await AsyncStreamingCard.reply(bot.async_api, event.message_id)   # "thinking..."
        try:
            async for chunk in llm_stream(event.text_without_mentions):
                card.append(chunk)                  # never blocks; coalesced to <= 4 PATCH/s
        except Exception as exc:
            await card.fail(f"LLM error: {type(exc).__name__}")
            return
        await card.finish()                         # the complete text, after the throttle allows it

or ``async with await AsyncStreamingCard.reply(...) as card:`` (finish on exit; fail when the block raises).

Contracts:

* :meth:`update` / :meth:`append` never raise for API errors. In the asyncio front a background task sends
  the latest text when the throttle allows; in the blocking front the call sends it inline when due (an
  update arriving earlier stays pending until the next due call or :meth:`finish`).
* A failed intermediate update is logged, kept in :attr:`errors` and passed to ``on_error``; streaming
  goes on (the next update carries the whole text anyway).
* :meth:`finish` / :meth:`fail` wait for the throttle, send the final card and raise
  :class:`~wslarkbot.exceptions.FeishuAPIError` (or the network error) when *that* send fails. After them
  :meth:`update` raises :class:`~wslarkbot.exceptions.ConfigurationError`.
* Creating the card (:meth:`reply` / :meth:`send`) raises directly: there is nothing to update.

Cards are rendered by ``render(text, state)`` with state ``"thinking"``, ``"streaming"``, ``"done"`` or
``"error"``; :func:`default_card` (PATCH) and :func:`default_card_v2` (CardKit: a JSON 2.0 card whose
markdown element :data:`ELEMENT_ID` is streamed) draw a markdown card (optional header) and keep the text
under the 30 KB card limit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from .exceptions import ConfigurationError, FeishuAPIError
from .openapi.cardkit import card_content

__all__ = [
    "CARDKIT_UPDATES_PER_SECOND",
    "DEFAULT_UPDATES_PER_SECOND",
    "ELEMENT_ID",
    "AsyncStreamingCard",
    "CardStream",
    "Render",
    "Send",
    "StreamState",
    "StreamingCard",
    "Wait",
    "default_card",
    "default_card_v2",
]

logger = logging.getLogger("wslarkbot.streaming")

#: Below Feishu's 5 PATCH/s per message, leaving room for network jitter.
DEFAULT_UPDATES_PER_SECOND = 4.0
#: Below the 10 updates/s per card entity we assume for CardKit (docs/openapi.md), with the same margin.
CARDKIT_UPDATES_PER_SECOND = 8.0
#: The markdown element of :func:`default_card_v2` that CardKit streams into.
ELEMENT_ID = "answer"

Mode = Literal["auto", "cardkit", "patch"]
#: Text kept in a default card: the 30 KB card limit minus room for the JSON around it.
MAX_CARD_TEXT_BYTES = 28 * 1024

StreamState = Literal["thinking", "streaming", "done", "error"]
#: ``render(text, state) -> card``: a card dict (or any object with ``to_dict()``).
Render = Callable[[str, StreamState], Any]

_TEMPLATES = {"thinking": "grey", "streaming": "blue", "done": "green", "error": "red"}


def _fit(text: str, limit: int = MAX_CARD_TEXT_BYTES) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 16].decode("utf-8", "ignore") + "\n\n…(truncated)"


def default_card(
    text: str, state: StreamState, *, title: str | None = None, thinking: str = "thinking..."
) -> dict[str, Any]:
    """A card showing ``text`` as markdown: ``thinking`` while empty, a "…" note while streaming, the
    header (when ``title``) coloured by state. ``update_multi`` is on, so group members see the updates."""
    body = text if text.strip() else (thinking if state in ("thinking", "streaming") else " ")
    elements: list[dict[str, Any]] = [{"tag": "markdown", "content": _fit(body)}]
    if state == "streaming":
        elements.append({"tag": "note", "elements": [{"tag": "plain_text", "content": "…"}]})
    card: dict[str, Any] = {"config": {"wide_screen_mode": True, "update_multi": True}, "elements": elements}
    if title:
        card["header"] = {"title": {"tag": "plain_text", "content": title}, "template": _TEMPLATES[state]}
    return card


def default_card_v2(
    text: str, state: StreamState, *, title: str | None = None, thinking: str = "thinking..."
) -> dict[str, Any]:
    """:func:`default_card` as a JSON 2.0 card for CardKit: streaming mode on until the final state, the
    text in the markdown element :data:`ELEMENT_ID`."""
    body = text if text.strip() else (thinking if state in ("thinking", "streaming") else " ")
    config: dict[str, Any] = {"update_multi": True, "streaming_mode": state in ("thinking", "streaming")}
    card: dict[str, Any] = {
        "schema": "2.0",
        "config": config,
        "body": {"elements": [{"tag": "markdown", "element_id": ELEMENT_ID, "content": _fit(body)}]},
    }
    if title:
        card["header"] = {"title": {"tag": "plain_text", "content": title}, "template": _TEMPLATES[state]}
    return card


@dataclass(frozen=True)
class Send:
    """Send ``card`` now (the throttle allows it); ``final``: it is the last one; ``text``: what it shows."""

    card: Any
    final: bool
    text: str = ""


@dataclass(frozen=True)
class Wait:
    """Nothing may be sent for ``seconds``; ask again then."""

    seconds: float


class CardStream:
    """The throttle and state of one streaming card, without I/O (both fronts drive it).

    Args:
        render: ``render(text, state) -> card``.
        max_updates_per_second: sends per second for this card (creation included), > 0.
        clock: monotonic seconds (injectable for tests).

    The driver: create the card with :meth:`first_card`, then call :meth:`created`; then loop
    ``step = stream.next_step()``: on :class:`Send` call :meth:`sending`, perform the request, then
    :meth:`sent` or :meth:`send_failed`; on :class:`Wait` wait and ask again; on None nothing is due.
    One request at a time, and the interval runs from each *answer*, so requests arrive at Feishu at least
    ``1 / max_updates_per_second`` apart (at most that many per second), whatever the latency.
    """

    def __init__(
        self,
        render: Render = default_card,
        *,
        max_updates_per_second: float = DEFAULT_UPDATES_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not max_updates_per_second > 0:
            raise ConfigurationError("max_updates_per_second must be > 0")
        self.render = render
        self.interval = 1.0 / max_updates_per_second
        self._clock = clock
        self.text = ""
        self._shown: str | None = None  # text of the last card sent
        self._final: Any = None
        self._closed = False
        self._done = False
        self._last_send: float | None = None

    @property
    def closed(self) -> bool:
        """:meth:`close` was called: no more text is accepted."""
        return self._closed

    @property
    def done(self) -> bool:
        """The final card was sent."""
        return self._done

    def set_text(self, text: str) -> None:
        """Replace the text. Raises :class:`ConfigurationError` once closed."""
        if self._closed:
            raise ConfigurationError("the streaming card is finished; no more updates")
        if not isinstance(text, str):
            raise ConfigurationError("text must be a string")
        self.text = text

    def append(self, chunk: str) -> None:
        """Add ``chunk`` to the text."""
        self.set_text(self.text + chunk)

    def first_card(self, text: str | None = None) -> Any:
        """The card to create the message with (state ``thinking``); call :meth:`created` once it exists."""
        if text is not None:
            self.text = text
        self._shown = self.text
        return self.render(self.text, "thinking")

    def created(self) -> None:
        """The card message was created; the first update waits one interval from now."""
        self._last_send = self._clock()

    def close(self, card: Any) -> None:
        """The final card; later :meth:`next_step` calls return it (once the throttle allows)."""
        self._final = card
        self._closed = True

    def next_step(self) -> Send | Wait | None:
        """What to do now (see the class docstring)."""
        if self._done:
            return None
        final = self._closed
        if not final and self.text == self._shown:
            return None
        if self._last_send is not None:
            wait = self.interval - (self._clock() - self._last_send)
            if wait > 0:
                return Wait(wait)
        card = self._final if final else self.render(self.text, "streaming")
        return Send(card, final, self.text)

    def sending(self, step: Send) -> None:
        """Record that ``step`` goes out now with the current text."""
        if not step.final:
            self._shown = self.text

    def sent(self, step: Send) -> None:
        """``step`` succeeded. The next send waits one interval from *now* (the answer), so requests reach
        Feishu at least an interval apart whatever the network latency."""
        self._last_send = self._clock()
        if step.final:
            self._done = True

    def send_failed(self, step: Send) -> None:
        """``step`` failed. A failed update is not retried with the same text (the next text goes out as
        usual, so a message that cannot be updated is not hammered); a final card stays pending."""
        self._last_send = self._clock()


class _Patch:
    """Updates by replacing the message's card."""

    mode = "patch"

    def __init__(self, message_id: str) -> None:
        self.id = message_id

    def call(self, api: Any, step: Send) -> Any:
        return api.update_card(self.id, step.card)


class _CardKit:
    """Updates through a CardKit card entity: its element's text while streaming, then the whole card."""

    mode = "cardkit"

    def __init__(self, card_id: str, element_id: str) -> None:
        self.id = card_id
        self.element_id = element_id
        self.sequence = 0

    def call(self, api: Any, step: Send) -> Any:
        self.sequence += 1  # consumed even if the call fails: Feishu wants each one above the last
        if step.final:
            return api.update_card_entity(self.id, step.card, self.sequence)
        return api.stream_card_text(self.id, self.element_id, _fit(step.text), self.sequence)


_Target = _Patch | _CardKit


def _plan(mode: Mode, render: Render | None, rate: float | None) -> tuple[bool, Render, float]:
    """Whether to try CardKit, the renderer and the update rate for ``mode`` (``rate`` None: the mode's).

    CardKit needs a JSON 2.0 card: ``auto`` tries it with the default renderer or a ``render`` that draws
    2.0 cards, and uses PATCH for a 1.0 one.
    """
    if mode not in ("auto", "cardkit", "patch"):
        raise ConfigurationError(f"mode must be 'auto', 'cardkit' or 'patch', not {mode!r}")
    if mode == "patch":
        return False, render or default_card, rate or DEFAULT_UPDATES_PER_SECOND
    chosen = render or default_card_v2
    first: Any = chosen("", "thinking")
    to_dict = getattr(first, "to_dict", None)
    v2 = (to_dict() if callable(to_dict) else first).get("schema") == "2.0"
    if mode == "cardkit" and not v2:
        raise ConfigurationError("CardKit streams JSON 2.0 cards: render must return one (default_card_v2)")
    return v2, chosen, rate or (CARDKIT_UPDATES_PER_SECOND if v2 else DEFAULT_UPDATES_PER_SECOND)


def _fallback(mode: Mode, exc: FeishuAPIError) -> None:
    if mode == "cardkit":
        raise exc
    logger.info("CardKit unavailable (%s: %s); streaming by PATCH instead", exc.code, exc.msg)


def _message_id(response: Any) -> str:
    message_id = response.get("message_id") if hasattr(response, "get") else None
    if not isinstance(message_id, str) or not message_id:
        raise ConfigurationError("the create/reply response carries no message_id")
    return message_id


_Opening = Generator[tuple[str, Any], Any, tuple[CardStream, str, "_Target | None"]]


def _opening(
    text: str,
    mode: Mode,
    render: Render | None,
    rate: float | None,
    clock: Callable[[], float],
    element_id: str,
) -> _Opening:
    """How a streaming card is created, for both fronts: yields ``("create", card)`` (create a CardKit card
    entity; a FeishuAPIError may be thrown back) and ``("deliver", content)`` (send or reply with that
    ``interactive`` content), each answered with the call's response; returns the stream, the message id
    and the update target (None: PATCH the message)."""
    cardkit, chosen, per_second = _plan(mode, render, rate)
    stream = CardStream(chosen, max_updates_per_second=per_second, clock=clock)
    first = stream.first_card(text)
    if cardkit:
        try:
            card_id = _card_id((yield ("create", first)))
        except FeishuAPIError as exc:
            _fallback(mode, exc)
            _, chosen, per_second = _plan("patch", render, rate)
            stream = CardStream(chosen, max_updates_per_second=per_second, clock=clock)
            first = stream.first_card(text)
        else:
            response = yield ("deliver", card_content(card_id))
            stream.created()
            return stream, _message_id(response), _CardKit(card_id, element_id)
    response = yield ("deliver", first)
    stream.created()
    return stream, _message_id(response), None


class _Front:
    """What both fronts share: construction, the final cards, error bookkeeping."""

    def __init__(
        self,
        api: Any,
        message_id: str,
        stream: CardStream,
        on_error: Callable[[BaseException], None] | None,
        target: _Target | None = None,
    ) -> None:
        self.api = api
        self.message_id = message_id
        self.stream = stream
        self.on_error = on_error
        self._target: _Target = target or _Patch(message_id)
        #: Errors of intermediate updates (the final send raises instead).
        self.errors: list[BaseException] = []

    @property
    def mode(self) -> str:
        """``"cardkit"`` or ``"patch"``: how this card is updated."""
        return self._target.mode

    @property
    def card_id(self) -> str | None:
        """The CardKit card entity's id (``mode == "cardkit"``), else None."""
        return self._target.id if isinstance(self._target, _CardKit) else None

    @property
    def text(self) -> str:
        return self.stream.text

    def _final_card(self, text: str | None, card: Any, state: StreamState) -> Any:
        if card is not None:
            return card
        if text is not None:
            self.stream.text = text
        return self.stream.render(self.stream.text, state)

    def _update_failed(self, step: Send, exc: BaseException) -> None:
        self.stream.send_failed(step)
        self.errors.append(exc)
        logger.warning("streaming card %s: update failed (%s); continuing", self.message_id, exc)
        if self.on_error is not None:
            self.on_error(exc)


def _card_id(response: Any) -> str:
    card_id = response.get("card_id") if hasattr(response, "get") else None
    if not isinstance(card_id, str) or not card_id:
        raise ConfigurationError("the card entity response carries no card_id")
    return card_id


class AsyncStreamingCard(_Front):
    """A streaming card on asyncio (``bot.async_api``); create it with :meth:`reply` or :meth:`send`.

    Use it from one event loop. See the module docstring for the contracts.
    """

    def __init__(
        self,
        api: Any,
        message_id: str,
        stream: CardStream,
        on_error: Callable[[BaseException], None] | None = None,
        target: _Target | None = None,
    ) -> None:
        super().__init__(api, message_id, stream, on_error, target)
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def reply(
        cls,
        api: Any,
        message_id: str,
        text: str = "",
        *,
        reply_in_thread: bool = False,
        mode: Mode = "auto",
        render: Render | None = None,
        max_updates_per_second: float | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        element_id: str = ELEMENT_ID,
    ) -> AsyncStreamingCard:
        """Reply to ``message_id`` with the ``thinking`` card (``text`` shown, or "thinking...").

        Args:
            mode: ``"auto"``, ``"cardkit"`` or ``"patch"`` (the module docstring).
            render: ``render(text, state) -> card`` (a 2.0 card with ``element_id`` for CardKit).
            max_updates_per_second: default 8 with CardKit, 4 with PATCH.

        Raises:
            FeishuAPIError: the reply failed (nothing to stream into).
        """

        def deliver(content: Any) -> Awaitable[Any]:
            return api.reply(message_id, content, "interactive", reply_in_thread=reply_in_thread)

        return await cls._open(
            api, text, deliver, mode, render, max_updates_per_second, on_error, clock, element_id
        )

    @classmethod
    async def send(
        cls,
        api: Any,
        receive_id: str,
        text: str = "",
        *,
        receive_id_type: str = "open_id",
        mode: Mode = "auto",
        render: Render | None = None,
        max_updates_per_second: float | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        element_id: str = ELEMENT_ID,
    ) -> AsyncStreamingCard:
        """Send the ``thinking`` card to ``receive_id`` (``receive_id_type``: open_id, chat_id...)."""

        def deliver(content: Any) -> Awaitable[Any]:
            return api.send(receive_id, content, "interactive", receive_id_type=receive_id_type)

        return await cls._open(
            api, text, deliver, mode, render, max_updates_per_second, on_error, clock, element_id
        )

    @classmethod
    async def _open(
        cls,
        api: Any,
        text: str,
        deliver: Callable[[Any], Awaitable[Any]],
        mode: Mode,
        render: Render | None,
        rate: float | None,
        on_error: Callable[[BaseException], None] | None,
        clock: Callable[[], float],
        element_id: str,
    ) -> AsyncStreamingCard:
        flow = _opening(text, mode, render, rate, clock, element_id)
        step = next(flow)
        while True:
            try:
                call = api.create_card if step[0] == "create" else deliver
                result = await call(step[1])
            except FeishuAPIError as exc:
                step = flow.throw(exc)
                continue
            try:
                step = flow.send(result)
            except StopIteration as stop:
                stream, message_id, target = stop.value
                return cls(api, message_id, stream, on_error, target)

    def update(self, text: str) -> None:
        """Show ``text`` (the whole text so far); sent in the background when the throttle allows."""
        self.stream.set_text(text)
        self._kick()

    def append(self, chunk: str) -> None:
        """Add ``chunk`` to the text shown."""
        self.stream.append(chunk)
        self._kick()

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(final=False))

    async def _flush(self, *, final: bool) -> None:
        while True:
            step = self.stream.next_step()
            if step is None or (isinstance(step, Send) and step.final and not final):
                return  # the final card is sent by _close, which raises its errors
            if isinstance(step, Wait):
                await asyncio.sleep(step.seconds)
                continue
            self.stream.sending(step)
            try:
                await self._target.call(self.api, step)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if step.final:
                    raise
                self._update_failed(step, exc)
            else:
                self.stream.sent(step)

    async def _close(self, card: Any) -> None:
        self.stream.close(card)
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            await asyncio.gather(flusher, return_exceptions=True)  # an update in flight completes first
        await self._flush(final=True)

    async def finish(self, text: str | None = None, *, card: Any = None) -> None:
        """Send the final card: ``card``, or the ``done`` rendering of ``text`` (default: the text so far).

        Raises:
            FeishuAPIError, httpx.HTTPError: the final update failed.
        """
        await self._close(self._final_card(text, card, "done"))

    async def fail(self, error: str | BaseException, *, card: Any = None) -> None:
        """Show ``error`` in the card (the ``error`` rendering: the text so far, then the error).

        Raises:
            FeishuAPIError, httpx.HTTPError: the final update failed.
        """
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        shown = f"{self.stream.text}\n\n**{message}**" if self.stream.text.strip() else f"**{message}**"
        await self._close(self._final_card(shown, card, "error"))

    async def __aenter__(self) -> AsyncStreamingCard:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.stream.closed:
            return
        if exc is None:
            await self.finish()
        elif isinstance(exc, Exception):
            await self.fail(exc)
        else:  # cancelled: stop the background sender, leave the card as it is
            if self._flusher is not None:
                self._flusher.cancel()


class StreamingCard(_Front):
    """A streaming card, blocking (``bot.api``); create it with :meth:`reply` or :meth:`send`.

    :meth:`update` / :meth:`append` send inline when the throttle allows and return at once otherwise;
    thread-safe (one sender at a time).
    """

    def __init__(
        self,
        api: Any,
        message_id: str,
        stream: CardStream,
        on_error: Callable[[BaseException], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        target: _Target | None = None,
    ) -> None:
        super().__init__(api, message_id, stream, on_error, target)
        self._lock = threading.RLock()
        self._sleep = sleep

    @classmethod
    def reply(
        cls,
        api: Any,
        message_id: str,
        text: str = "",
        *,
        reply_in_thread: bool = False,
        mode: Mode = "auto",
        render: Render | None = None,
        max_updates_per_second: float | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        element_id: str = ELEMENT_ID,
    ) -> StreamingCard:
        """Reply to ``message_id`` with the ``thinking`` card (as :meth:`AsyncStreamingCard.reply`).
        Raises FeishuAPIError when that fails."""

        def deliver(content: Any) -> Any:
            return api.reply(message_id, content, "interactive", reply_in_thread=reply_in_thread)

        return cls._open(
            api, text, deliver, mode, render, max_updates_per_second, on_error, clock, element_id
        )

    @classmethod
    def send(
        cls,
        api: Any,
        receive_id: str,
        text: str = "",
        *,
        receive_id_type: str = "open_id",
        mode: Mode = "auto",
        render: Render | None = None,
        max_updates_per_second: float | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        element_id: str = ELEMENT_ID,
    ) -> StreamingCard:
        """Send the ``thinking`` card to ``receive_id``."""

        def deliver(content: Any) -> Any:
            return api.send(receive_id, content, "interactive", receive_id_type=receive_id_type)

        return cls._open(
            api, text, deliver, mode, render, max_updates_per_second, on_error, clock, element_id
        )

    @classmethod
    def _open(
        cls,
        api: Any,
        text: str,
        deliver: Callable[[Any], Any],
        mode: Mode,
        render: Render | None,
        rate: float | None,
        on_error: Callable[[BaseException], None] | None,
        clock: Callable[[], float],
        element_id: str,
    ) -> StreamingCard:
        flow = _opening(text, mode, render, rate, clock, element_id)
        step = next(flow)
        while True:
            try:
                result = (api.create_card if step[0] == "create" else deliver)(step[1])
            except FeishuAPIError as exc:
                step = flow.throw(exc)
                continue
            try:
                step = flow.send(result)
            except StopIteration as stop:
                stream, message_id, target = stop.value
                return cls(api, message_id, stream, on_error, target=target)

    def update(self, text: str) -> None:
        """Show ``text``; sent now if the throttle allows, else by a later call."""
        with self._lock:
            self.stream.set_text(text)
            self._flush(final=False)

    def append(self, chunk: str) -> None:
        with self._lock:
            self.stream.append(chunk)
            self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        while True:
            step = self.stream.next_step()
            if step is None:
                return
            if isinstance(step, Wait):
                if not final:
                    return  # not due: stays pending
                self._sleep(step.seconds)
                continue
            self.stream.sending(step)
            try:
                self._target.call(self.api, step)
            except Exception as exc:
                if step.final:
                    raise
                self._update_failed(step, exc)
                return
            self.stream.sent(step)

    def _close(self, card: Any) -> None:
        with self._lock:
            self.stream.close(card)
            self._flush(final=True)

    def finish(self, text: str | None = None, *, card: Any = None) -> None:
        """Send the final card (waits for the throttle). Raises when that send fails."""
        with self._lock:
            self._close(self._final_card(text, card, "done"))

    def fail(self, error: str | BaseException, *, card: Any = None) -> None:
        """Show ``error`` in the card. Raises when that send fails."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with self._lock:
            shown = f"{self.stream.text}\n\n**{message}**" if self.stream.text.strip() else f"**{message}**"
            self._close(self._final_card(shown, card, "error"))

    def __enter__(self) -> StreamingCard:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.stream.closed:
            return
        if exc is None:
            self.finish()
        elif isinstance(exc, Exception):
            self.fail(exc)
