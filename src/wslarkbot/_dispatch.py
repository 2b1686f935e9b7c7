"""The drivers of :class:`~wslarkbot.bot.Bot`'s dispatch flow (private).

``Bot._flow`` is a generator that does no I/O: it yields *steps* and a driver performs them:

- :class:`Call` -- call ``func(*args)`` and send back its result (or throw its exception into the flow);
- :class:`Acquire` -- take the ordering lock of ``key`` (per chat), send back None;
- :class:`Release` -- release it.

:func:`drive_sync` runs a flow in the calling thread (``threading`` locks); :func:`drive_async` on the running
loop (``asyncio`` locks; ``def`` steps in an executor). A driver releases every lock the flow still holds
when the flow ends in any way (an exception, a cancelled task), so a chat can never stay locked.

Ordering locks are FIFO in both drivers (a ticket lock for threads; ``asyncio.Lock`` queues its waiters), and
a key's lock exists only while someone holds or waits for it, so memory stays bounded by the number of
messages in flight.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Generator, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .exceptions import ConfigurationError
from .tenancy import acting_for

__all__ = [
    "Acquire",
    "AsyncKeyedLocks",
    "Call",
    "KeyedLocks",
    "Release",
    "Step",
    "drive_async",
    "drive_sync",
    "handler_name",
    "is_async_callable",
]

T = TypeVar("T")
L = TypeVar("L")


@dataclass(frozen=True)
class Call:
    """Call ``func(*args)`` and send back its result."""

    func: Callable[..., Any]
    args: tuple[Any, ...]
    name: str
    #: the event's tenant: the call runs acting for it (wslarkbot/tenancy.py)
    tenant: str | None = None


@dataclass(frozen=True)
class Acquire:
    """Wait for the ordering lock of ``key``."""

    key: Hashable


@dataclass(frozen=True)
class Release:
    """Release the ordering lock of ``key`` (taken by a previous :class:`Acquire`)."""

    key: Hashable


Step = Call | Acquire | Release


def handler_name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def is_async_callable(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    dunder_call = getattr(func, "__call__", None)  # noqa: B004 - an object with ``async def __call__``
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(dunder_call)


# -- keyed locks: the bookkeeping is shared, the lock type is the driver's -----------------------------


class _LockTable(Generic[L]):
    """``key -> [lock, users]``; an entry lives while someone holds or waits for its lock."""

    def __init__(self, factory: Callable[[], L]) -> None:
        self._factory = factory
        self._entries: dict[Hashable, list[Any]] = {}
        self._mutex = threading.Lock()  # bookkeeping only: never held while waiting for a lock

    def checkout(self, key: Hashable) -> L:
        with self._mutex:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = [self._factory(), 0]
            entry[1] += 1
            lock: L = entry[0]
            return lock

    def held(self, key: Hashable) -> L:
        """The lock of a key the caller holds (checked out)."""
        with self._mutex:
            lock: L = self._entries[key][0]
            return lock

    def checkin(self, key: Hashable) -> None:
        with self._mutex:
            entry = self._entries[key]
            entry[1] -= 1
            if entry[1] == 0:
                del self._entries[key]

    def __len__(self) -> int:
        with self._mutex:
            return len(self._entries)


class _TicketLock:
    """A FIFO lock for threads: waiters are served in the order they called :meth:`acquire`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0
        self._serving = 0

    def acquire(self) -> None:
        with self._cond:
            ticket = self._next
            self._next += 1
            self._cond.wait_for(lambda: self._serving == ticket)

    def release(self) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


class KeyedLocks:
    """FIFO per-key locks for threads (the sync driver)."""

    def __init__(self) -> None:
        self._table: _LockTable[_TicketLock] = _LockTable(_TicketLock)

    def acquire(self, key: Hashable) -> None:
        self._table.checkout(key).acquire()

    def release(self, key: Hashable) -> None:
        self._table.held(key).release()
        self._table.checkin(key)

    def __len__(self) -> int:
        """Keys currently held or waited for."""
        return len(self._table)


class AsyncKeyedLocks:
    """FIFO per-key ``asyncio`` locks (the async driver); keys are per event loop."""

    def __init__(self) -> None:
        self._table: _LockTable[asyncio.Lock] = _LockTable(asyncio.Lock)

    @staticmethod
    def _scoped(key: Hashable) -> Hashable:
        return (id(asyncio.get_running_loop()), key)  # an asyncio.Lock belongs to one loop

    async def acquire(self, key: Hashable) -> None:
        scoped = self._scoped(key)
        lock = self._table.checkout(scoped)
        try:
            await lock.acquire()
        except BaseException:  # cancelled while waiting: give the slot back
            self._table.checkin(scoped)
            raise

    def release(self, key: Hashable) -> None:
        scoped = self._scoped(key)
        self._table.held(scoped).release()
        self._table.checkin(scoped)

    def __len__(self) -> int:
        return len(self._table)


# -- drivers --------------------------------------------------------------------------------------------


def _run_awaitable_sync(value: Awaitable[T]) -> T:
    """``asyncio.run`` an awaitable a sync handler call produced, when no loop runs in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        close = getattr(value, "close", None)
        if close is not None:
            close()  # never awaited: close it to avoid a "was never awaited" warning
        raise ConfigurationError(
            "async handler called by process_message in a running event loop; use aprocess_message"
        )

    async def _await() -> T:
        return await value

    return asyncio.run(_await())


def drive_sync(flow: Generator[Step, Any, T], locks: KeyedLocks) -> T:
    """Run a dispatch flow in the calling thread.

    ``async def`` steps run with :func:`asyncio.run` when no loop runs in this thread; inside a running loop
    they fail with :class:`ConfigurationError` (thrown into the flow, which logs it).
    """
    held: list[Hashable] = []
    try:
        step = next(flow)
        while True:
            if isinstance(step, Acquire):
                locks.acquire(step.key)
                held.append(step.key)
                step = flow.send(None)
                continue
            if isinstance(step, Release):
                held.remove(step.key)
                locks.release(step.key)
                step = flow.send(None)
                continue
            try:
                with acting_for(step.tenant):
                    value = step.func(*step.args)
                    if inspect.isawaitable(value):
                        value = _run_awaitable_sync(value)
            except Exception as exc:  # handed to the flow, which logs it
                step = flow.throw(exc)
            else:
                step = flow.send(value)
    except StopIteration as stop:
        return stop.value
    finally:
        flow.close()
        for key in reversed(held):
            locks.release(key)


async def drive_async(flow: Generator[Step, Any, T], executor: Executor | None, locks: AsyncKeyedLocks) -> T:
    """Run a dispatch flow on the running loop; ``def`` steps run in ``executor``."""
    loop = asyncio.get_running_loop()
    held: list[Hashable] = []
    try:
        step = next(flow)
        while True:
            if isinstance(step, Acquire):
                await locks.acquire(step.key)
                held.append(step.key)
                step = flow.send(None)
                continue
            if isinstance(step, Release):
                held.remove(step.key)
                locks.release(step.key)
                step = flow.send(None)
                continue
            try:
                with acting_for(step.tenant):
                    if is_async_callable(step.func):
                        value = await step.func(*step.args)
                    else:  # in this context (the tenant, and whatever else the caller set)
                        call = functools.partial(contextvars.copy_context().run, step.func, *step.args)
                        value = await loop.run_in_executor(executor, call)
                        if inspect.isawaitable(value):
                            value = await value
            except Exception as exc:
                step = flow.throw(exc)
            else:
                step = flow.send(value)
    except StopIteration as stop:
        return stop.value
    finally:
        flow.close()
        for key in reversed(held):
            locks.release(key)
