"""start_eagerly (relay/fastpath/eager.py): the first step runs at once, a task continues only if needed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wslarkbot.relay.fastpath.eager import start_eagerly


async def test_a_coroutine_that_never_suspends_runs_to_the_end_without_a_task() -> None:
    seen: list[Any] = []
    tasks: list[asyncio.Task[Any]] = []

    async def work() -> None:
        seen.append(asyncio.current_task())

    assert start_eagerly(work(), tasks.append) is None
    assert seen == [asyncio.current_task()]  # ran in the caller's frame (and task), before returning
    assert tasks == []


async def test_a_coroutine_that_suspends_is_continued_by_a_task_with_the_awaited_value() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    steps: list[Any] = []
    tasks: list[asyncio.Task[Any]] = []

    async def work() -> None:
        steps.append("first")
        steps.append(await fut)
        steps.append(asyncio.current_task())

    task = start_eagerly(work(), tasks.append)
    assert steps == ["first"]
    assert task is not None and tasks == [task]
    fut.set_result(42)
    await asyncio.wait_for(task, 5)
    assert steps == ["first", 42, task]


async def test_cancelling_the_continuing_task_cancels_the_coroutine() -> None:
    cleaned = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.set()

    task = start_eagerly(work(), lambda t: None)
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()


async def test_errors_surface_where_they_happen() -> None:
    async def fails_at_once() -> None:
        raise ValueError("first step")

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise KeyError("second step")

    with pytest.raises(ValueError, match="first step"):
        start_eagerly(fails_at_once(), lambda t: None)
    task = start_eagerly(fails_later(), lambda t: None)
    assert task is not None
    with pytest.raises(KeyError):
        await asyncio.wait_for(task, 5)
