"""Run a coroutine's first step at once; give it a task only if it suspends.

Most webhooks on an in-memory hub are answered without ever waiting: creating a task for each, and
waiting one loop iteration for it to start, cost more than the relay logic it runs. :func:`start_eagerly`
is what ``asyncio.eager_task_factory`` does on Python 3.12+: the first step runs now, in the caller's
frame; if the coroutine suspends, a task continues it from that point (so ``asyncio.current_task()`` is
None only during the first step). Use it only for code that does not need a task before its first
suspension: the fast path does so only when the hub says it never suspends (``Hub.synchronous``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any

__all__ = ["start_eagerly"]


class _Resume:
    """An awaitable that continues ``coro`` after it yielded ``first`` (a future) outside any task."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._first
        while True:
            try:
                sent = yield value  # the task waits on what the coroutine waits on
            except BaseException as exc:  # e.g. the task was cancelled: the coroutine sees it
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _continue(resume: _Resume) -> Any:
    return await resume


def start_eagerly(
    coro: Coroutine[Any, Any, None], track: Callable[[asyncio.Task[Any]], None]
) -> asyncio.Task[Any] | None:
    """Run ``coro`` until it finishes or first suspends; in the latter case return the task that goes on.

    Exceptions of the first step propagate to the caller, as from a plain call.

    Args:
        track: called with the task, if one is needed (to keep a reference and wait for it on shutdown).
    """
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    task = asyncio.get_running_loop().create_task(_continue(_Resume(coro, first)))
    track(task)
    return task
