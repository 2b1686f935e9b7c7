"""Replay after reconnect: buffered events, and the couriers and pumps that deliver them (replay.py's model).

For an app with ``replay = true`` (docs/long-connection.md "Replay after reconnect"):

1. :meth:`Replayer.accept` stores the webhook's event, leased to this node, *before* delivering it; a full
   buffer raises :class:`ReplayFull` (the webhook answers 503, Feishu retries).
2. It picks a connection of the app (this node, or another node through the cluster):

   * none anywhere: the entry is released (due) and the webhook answers 200 at once;
   * here: a courier (:meth:`Replayer._courier`) delivers it; remote: an ``entry`` message hands the entry
     (and its lease) to that node, whose courier delivers it and sends the answer back.

   The webhook waits up to ``event_timeout`` for the answer and maps it as without replay (``{"code":500}``
   -> 500, Feishu re-pushes); with no answer by then it answers 200: the event is the relay's to deliver.
3. A courier holds the entry's lease (renewed by :meth:`Replayer._renew_forever`) while its client works. An
   answer removes the entry; losing every local connection first releases it (due) and wakes the nodes with
   connections; a node that dies lets the lease lapse, and the entry becomes due again.
4. A pump runs per app on every node while it has connections of the app: it claims due entries and starts a
   courier for each; it wakes on a new connection, a ``wake`` message, or every ``lease / 2`` seconds (to find
   lapsed leases).

Delivery is at least once: a client that handled an event but died before its answer was read gets it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...exceptions import WslarkbotError
from ..limits import BackendUnavailable
from .config import GatewayApp, GatewayConfig
from .registry import ClientRegistry, DeliveryTimeout, NoClientConnected
from .replay import Entry, ReplayStore
from .router import pick_node

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["LEASE", "Replayer", "ReplayFull"]

log = logging.getLogger("wslarkbot.relay.longconn")

#: Seconds an entry stays leased to a courier without renewal.
LEASE = 10.0
#: Most couriers per app and node (claims stop beyond, the rest wait in the buffer).
MAX_INFLIGHT = 100


class ReplayFull(WslarkbotError):
    """The app's replay buffer holds ``replay_size`` events (the webhook answers 503)."""


class Replayer:
    """Buffered delivery for the apps with ``replay = true``.

    Args:
        store: :class:`~.replay.MemoryReplay`, or the cluster's :class:`~.redis_replay.RedisReplay`.
        cluster: the other nodes (``--redis``), or None.
    """

    def __init__(
        self,
        config: GatewayConfig,
        clients: ClientRegistry,
        store: ReplayStore,
        cluster: Cluster | None = None,
        *,
        lease: float = LEASE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clients = clients
        self.store = store
        self.cluster = cluster
        self.lease = lease
        self._clock = clock
        self._held: dict[str, set[str]] = {}  # app_id -> entry ids leased to this node
        self._answers: dict[str, asyncio.Future[dict[str, Any] | None]] = {}  # local webhooks waiting
        self._wake: dict[str, asyncio.Event] = {}
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()  # set whenever this node removed or released an entry
        self._rng = random.Random()

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        if any(app.replay for app in self.config.apps.values()):
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def close(self) -> None:
        """Stop couriers and pumps; hand this node's leased entries back (due) for the other nodes."""
        tasks = [*self._tasks, *self._pumps.values()] + ([self._renewer] if self._renewer else [])
        held = [(app_id, entry_id) for app_id, ids in self._held.items() for entry_id in ids]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for app_id, entry_id in held:
            with contextlib.suppress(BackendUnavailable):
                await self.store.release(app_id, entry_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            for app_id, ids in list(self._held.items()):
                if ids:
                    try:
                        await self.store.renew(app_id, list(ids), self.lease)
                    except BackendUnavailable:
                        log.warning("gateway replay: cannot renew leases of %s (redis unavailable)", app_id)

    def _hold(self, app_id: str, entry_id: str) -> None:
        self._held.setdefault(app_id, set()).add(entry_id)

    def _unhold(self, app_id: str, entry_id: str) -> None:
        self._held.get(app_id, set()).discard(entry_id)

    async def buffered(self, app_id: str) -> int:
        """Events held for ``app_id`` (tests, status)."""
        return await self.store.count(app_id)

    async def wait_empty(self, app_id: str, timeout: float) -> None:
        """Wait until this node saw the app's buffer empty (tests, drain before shutdown).

        Raises:
            TimeoutError: still holding events after ``timeout`` seconds.
        """

        async def empty() -> None:
            while True:
                self._settled.clear()
                if await self.store.count(app_id) == 0:
                    return
                await self._settled.wait()

        await asyncio.wait_for(empty(), timeout)

    # --- webhooks -----------------------------------------------------------------------------------

    async def accept(
        self, app: GatewayApp, payload: bytes, trace_id: str | None, timeout: float
    ) -> dict[str, Any] | None:
        """Store and deliver one event; the client's answer, or None when it is buffered for later.

        Raises:
            ReplayFull: the buffer is full. BackendUnavailable: Redis is down (nothing was stored).
        """
        app_id = app.app_id
        entry = Entry(uuid.uuid4().hex, payload, trace_id or uuid.uuid4().hex, self._clock())
        if not await self.store.put(
            app_id, entry, size=app.replay_size, ttl=app.replay_ttl, lease=self.lease
        ):
            raise ReplayFull(app_id)
        self._hold(app_id, entry.id)
        future: asyncio.Future[Any]
        try:
            try:
                target = await self._target(app_id)
                if target is None:
                    await self._release(app_id, entry.id, wake=False)
                    return None
                if self.cluster is None or target == self.cluster.node_id:
                    future = asyncio.get_running_loop().create_future()
                    self._answers[entry.id] = future
                    self._spawn(self._courier(app_id, entry, None))
                else:
                    future = self.cluster.expect(entry.id)
                    message = {"op": "entry", "app": app_id, "entry": entry.encode()}
                    if not await self.cluster.send(target, message):
                        await self._release(app_id, entry.id, wake=True)
                        return None
                    self._unhold(app_id, entry.id)  # the target's courier holds the lease now
            except BackendUnavailable:
                # Feishu will hear 503 and retry: take the entry back so it is not delivered twice.
                self._unhold(app_id, entry.id)
                with contextlib.suppress(BackendUnavailable):
                    await self.store.done(app_id, entry.id)
                raise
            try:
                reply = await asyncio.wait_for(asyncio.shield(future), timeout)
            except asyncio.TimeoutError:
                return None
            if isinstance(reply, dict) and reply.get("op") == "answer":  # from another node
                reply = reply.get("answer")
            return reply if isinstance(reply, dict) else None
        finally:
            self._answers.pop(entry.id, None)
            if self.cluster is not None:
                self.cluster.forget(entry.id)

    async def _target(self, app_id: str) -> str | None:
        """Where to deliver now: this node's id ("" without a cluster), another node's, or None."""
        if self.cluster is None:
            return "" if self.clients.connections(app_id) else None
        if self.clients.connections(app_id):
            return self.cluster.node_id  # a local client: no hop through Redis
        return pick_node(await self.cluster.nodes(app_id), {self.cluster.node_id}, self._rng)

    async def _release(self, app_id: str, entry_id: str, *, wake: bool) -> None:
        self._unhold(app_id, entry_id)
        try:
            await self.store.release(app_id, entry_id)
        except BackendUnavailable:
            log.warning("gateway replay: cannot release %s of %s; its lease will lapse", entry_id, app_id)
        if wake:
            await self.wake_all(app_id)

    # --- couriers -----------------------------------------------------------------------------------

    async def take(self, message: dict[str, Any]) -> None:
        """Another node handed over a buffered event (``entry`` message): deliver it to a local client."""
        try:
            app_id = str(message["app"])
            entry = Entry.decode(message["entry"])
        except (KeyError, ValueError, TypeError):
            log.warning("gateway: malformed entry message from node %s", message.get("from"))
            return
        if app_id in self.config.apps:
            await self._courier(app_id, entry, str(message.get("from")))

    async def _courier(self, app_id: str, entry: Entry, origin: str | None) -> None:
        """Deliver ``entry`` to this node's client(s); ``origin``: the node whose webhook waits, if remote."""
        app = self.config.apps[app_id]
        self._hold(app_id, entry.id)
        answer: dict[str, Any] | None = None
        try:
            remaining = entry.stored_at + app.replay_ttl - self._clock()
            try:
                if remaining <= 0:
                    raise DeliveryTimeout("expired")
                answer = await self.clients.deliver(
                    app_id, entry.payload, timeout=remaining, trace_id=entry.trace_id
                )
            except NoClientConnected:
                log.info("gateway replay: %s of %s lost its connection; buffered again", entry.id, app_id)
                await self._release(app_id, entry.id, wake=True)
                return
            except DeliveryTimeout:
                log.warning("gateway replay: %s of %s expired (replay_ttl) undelivered", entry.id, app_id)
            try:
                await self.store.done(app_id, entry.id)
            except BackendUnavailable:
                log.warning("gateway replay: cannot remove answered %s of %s", entry.id, app_id)
            if answer is not None and answer.get("code") != 200:
                # A waiting webhook answers 500 (Feishu re-pushes); after it answered 200 the event is gone.
                log.warning(
                    "gateway replay: bot failed on %s of %s; removed from the buffer", entry.id, app_id
                )
        finally:
            self._unhold(app_id, entry.id)
            self._settled.set()
            self._notify(entry.id, origin, answer)

    def _notify(self, entry_id: str, origin: str | None, answer: dict[str, Any] | None) -> None:
        future = self._answers.get(entry_id)
        if future is not None and not future.done():
            future.set_result(answer)
        elif origin and self.cluster is not None:
            self.cluster.reply(origin, {"op": "answer", "id": entry_id, "answer": answer})

    # --- pumps --------------------------------------------------------------------------------------

    def wake(self, app_id: str) -> None:
        """Buffered events of ``app_id`` may be due (a connection opened here, or another node said so)."""
        app = self.config.apps.get(app_id)
        if app is None or not app.replay:
            return
        self._wake.setdefault(app_id, asyncio.Event()).set()
        if app_id not in self._pumps and self.clients.connections(app_id):
            self._pumps[app_id] = asyncio.get_running_loop().create_task(self._pump(app))

    async def wake_all(self, app_id: str) -> None:
        """Wake the pumps of every node with connections of ``app_id``."""
        self.wake(app_id)
        if self.cluster is None:
            return
        try:
            for node in await self.cluster.nodes(app_id):
                if node != self.cluster.node_id:
                    await self.cluster.send(node, {"op": "wake", "app": app_id})
        except BackendUnavailable:
            pass  # their pumps poll every lease / 2

    async def _pump(self, app: GatewayApp) -> None:
        app_id = app.app_id
        event = self._wake.setdefault(app_id, asyncio.Event())
        try:
            while self.clients.connections(app_id):
                event.clear()
                room = MAX_INFLIGHT - len(self._held.get(app_id, ()))
                claimed: list[Entry] = []
                if room > 0:
                    try:
                        claimed = await self.store.claim(
                            app_id, limit=room, ttl=app.replay_ttl, lease=self.lease
                        )
                    except BackendUnavailable:
                        pass
                for entry in claimed:
                    self._hold(app_id, entry.id)
                    self._spawn(self._courier(app_id, entry, None))
                if claimed:
                    continue
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), self.lease / 2)
        finally:
            self._pumps.pop(app_id, None)
