"""Broadcast delivery's race: the first client answer ``{"code": 200}`` wins. No sockets.

Shared by the per-node client registry (every local connection of an app) and the cluster router (every
node with a connection), so both stop at the first success and cancel the rest the same way
(long-connection.md §1, "Answering an event").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RaceResult", "first_success"]


@dataclass
class RaceResult:
    """What the race ended with.

    Attributes:
        answer: the first ``{"code": 200}`` answer, else the last answer seen, else None.
        errors: the exceptions the other attempts ended with (cancelled attempts are not listed).
    """

    answer: dict[str, Any] | None = None
    errors: list[BaseException] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.answer is not None and self.answer.get("code") == 200


async def first_success(
    attempts: Iterable[Awaitable[dict[str, Any]]],
    *,
    deadline: float | None = None,
    fatal: Callable[[BaseException], bool] = lambda exc: False,
) -> RaceResult:
    """Run ``attempts`` concurrently until one answers ``{"code": 200}`` or all have ended.

    Args:
        deadline: event-loop time after which the race stops (None: wait for every attempt).
        fatal: exceptions for which the race stops at once and re-raises.

    Returns:
        A :class:`RaceResult`; the attempts still running are cancelled and awaited before it returns.
    """
    loop = asyncio.get_running_loop()
    tasks = {asyncio.ensure_future(a) for a in attempts}
    result = RaceResult()
    try:
        while tasks:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            done, tasks = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break
            for task in done:
                if task.cancelled():
                    continue
                exc = task.exception()
                if exc is not None:
                    if fatal(exc):
                        raise exc
                    result.errors.append(exc)
                    continue
                result.answer = task.result()
                if result.ok:
                    return result
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return result
