"""The gateway across relay nodes sharing one Redis (``serve --redis``): registry, tickets, messages.

Each node opens its own :class:`~..redis_link.RedisLink` (separate from the relay hub's) and subscribes to its
node channel. Keys and channels (docs/long-connection.md "Several relay nodes")::

    wslarkbot:lc:conns:<app_id>      zset  "<node>|<device_id>" -> lease end (ms); the app's connections on
                                           every node. A node refreshes its members every LEASE/3; a dead
                                           node's members lapse after LEASE. Counted against max_connections.
    wslarkbot:lc:ticket:<device_id>  string, SET NX PX (until the ticket's expiry): one-time use of a ticket
    wslarkbot:lc:node:<node>         pub/sub: messages for one node (JSON, below)
    wslarkbot:lc:replay:<app_id>:*   the shared replay buffer (redis_replay.py)

Messages (``op``):

* ``deliver`` {id, app, payload (b64), trace, timeout, from}: push to a local client, answer with ``answer``;
* ``answer`` {id, answer | error}: the client's answer (``error``: ``none`` = no client here, ``timeout``);
* ``entry`` {app, entry, from}: take over a buffered event (replayer.py) and deliver it to a local client;
* ``wake`` {app}: buffered events of ``app`` became due; a node with clients of ``app`` claims them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..limits import BackendUnavailable
from ..redis_link import RedisLink
from ..redis_protocol import new_node_id
from .redis_replay import RedisReplay
from .tickets import Ticket

__all__ = ["CONN_LEASE", "Cluster", "conns_key", "new_node_id", "node_channel"]

log = logging.getLogger("wslarkbot.relay.longconn")

#: Seconds a node's connection entries live without a heartbeat (a crashed node's slots free up after this).
CONN_LEASE = 15.0

_RESERVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


def node_channel(node_id: str) -> str:
    return f"wslarkbot:lc:node:{node_id}"


def conns_key(app_id: str) -> str:
    return f"wslarkbot:lc:conns:{app_id}"


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class Cluster:
    """This node's view of the other gateway nodes.

    Args:
        url: the relay's ``--redis`` URL.
        on_request: awaited (as a task) for every message but ``answer``.
    """

    def __init__(
        self,
        url: str,
        on_request: Callable[[dict[str, Any]], Coroutine[Any, Any, None]],
        *,
        node_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id or new_node_id()
        self._on_request = on_request
        self._clock = clock
        self.link = RedisLink(
            url,
            node_channel(self.node_id),
            self._on_message,
            client_name=f"wslarkbot-gw-{self.node_id}",
            on_up=self._link_up,
        )
        self.replay = RedisReplay(self.link.command, self.link.client, clock)
        self._reserve = self.link.client.register_script(_RESERVE)
        self._members: dict[str, str] = {}  # "<node>|<device>" -> app_id, registered by this node
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.link.start()
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(BackendUnavailable):
            members = list(self._members.items())
            if members:

                async def drop(r: Any) -> None:
                    pipe = r.pipeline(transaction=False)
                    for member, app_id in members:
                        pipe.zrem(conns_key(app_id), member)
                    await pipe.execute()

                await self.link.command(drop)
        await self.link.close()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(CONN_LEASE / 3)
            members = list(self._members.items())
            if not members:
                continue
            try:
                await self.link.command(functools.partial(self._refresh, members=members))
            except BackendUnavailable:
                log.debug("gateway heartbeat skipped: redis unavailable")

    def _link_up(self) -> None:
        """The link is (back) up: register this node's connections again at once. A Redis restarted empty
        has forgotten them, and until the next heartbeat (``CONN_LEASE`` / 3) other nodes would answer
        "no client connected" for apps whose bots are connected here."""
        members = list(self._members.items())
        if not members:
            return

        async def refresh() -> None:
            try:
                await self.link.command(functools.partial(self._refresh, members=members))
            except BackendUnavailable:
                log.debug("gateway re-registration skipped: redis unavailable again")

        task = asyncio.get_running_loop().create_task(refresh())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, r: Any, members: list[tuple[str, str]]) -> None:
        until = _ms(self._clock() + CONN_LEASE)
        pipe = r.pipeline(transaction=False)
        for member, app_id in members:
            pipe.zadd(conns_key(app_id), {member: until}, xx=True, ch=True)
            pipe.pexpire(conns_key(app_id), _ms(CONN_LEASE * 2))
        results = await pipe.execute()
        # 0 = the member was gone (Redis restarted, or its lease lapsed while Redis was unreachable): re-add
        # it unless the connection closed meanwhile (then unregister has removed it from _members).
        lost = [
            (m, a) for (m, a), n in zip(members, results[::2], strict=True) if not n and m in self._members
        ]
        for member, app_id in lost:
            await r.zadd(conns_key(app_id), {member: until})

    # --- connections and tickets ---------------------------------------------------------------------

    def _member(self, device_id: str) -> str:
        return f"{self.node_id}|{device_id}"

    async def consume_ticket(self, ticket: Ticket) -> bool:
        """One-time use across nodes: False if any node redeemed this ticket before."""
        ttl = max(1, _ms(ticket.expiry - self._clock()))
        key = f"wslarkbot:lc:ticket:{ticket.device_id}"
        return bool(await self.link.command(lambda r: r.set(key, self.node_id, nx=True, px=ttl)))

    async def reserve(self, app_id: str, device_id: str, limit: int) -> bool:
        """Claim one of the app's ``limit`` connection slots (all nodes together)."""
        now = self._clock()
        member = self._member(device_id)
        args: list[str | int] = [_ms(now), member, limit, _ms(now + CONN_LEASE), _ms(CONN_LEASE * 2)]
        keys = [conns_key(app_id)]
        ok = bool(await self.link.command(lambda r: self._reserve(keys=keys, args=args, client=r)))
        if ok:
            self._members[member] = app_id
        return ok

    async def unregister(self, app_id: str, device_id: str) -> None:
        """Free the slot of a closed connection (best effort: it lapses after CONN_LEASE anyway)."""
        member = self._member(device_id)
        self._members.pop(member, None)
        with contextlib.suppress(BackendUnavailable):
            await self.link.command(lambda r: r.zrem(conns_key(app_id), member))

    async def nodes(self, app_id: str) -> dict[str, int]:
        """Nodes with live connections of ``app_id`` -> how many each."""
        members = await self.link.command(
            lambda r: r.zrangebyscore(conns_key(app_id), _ms(self._clock()), "+inf")
        )
        out: dict[str, int] = {}
        for raw in members:
            node = (raw.decode() if isinstance(raw, bytes) else str(raw)).rsplit("|", 1)[0]
            out[node] = out.get(node, 0) + 1
        return out

    # --- messages -----------------------------------------------------------------------------------

    async def send(self, node_id: str, message: dict[str, Any]) -> bool:
        """PUBLISH to ``node_id``; False if no node listens there (it died)."""
        data = json.dumps({**message, "from": self.node_id}, separators=(",", ":"))
        receivers = await self.link.command(lambda r: r.publish(node_channel(node_id), data))
        return bool(receivers)

    def reply(self, node_id: str, message: dict[str, Any]) -> None:
        """PUBLISH soon without waiting (answers; lost if Redis is down: the waiter times out)."""
        self.link.post(node_channel(node_id), json.dumps(message, separators=(",", ":")).encode())

    def expect(self, message_id: str) -> asyncio.Future[dict[str, Any]]:
        """A future resolved by the ``answer`` message with this id."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
        return future

    def forget(self, message_id: str) -> None:
        self._waiting.pop(message_id, None)

    async def request(self, node_id: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``message`` (with an ``id``) and wait for its ``answer``.

        Raises:
            asyncio.TimeoutError: no answer in time. BackendUnavailable: Redis is down.
        """
        future = self.expect(message["id"])
        try:
            if not await self.send(node_id, message):
                return {"op": "answer", "id": message["id"], "error": "none"}
            return await asyncio.wait_for(future, timeout)
        finally:
            self.forget(message["id"])

    async def _on_message(self, _channel: str, data: bytes) -> None:
        try:
            message = json.loads(data)
            op = message["op"]
        except (ValueError, KeyError, TypeError):
            log.warning("gateway: undecodable cluster message ignored")
            return
        if op == "answer":
            future = self._waiting.get(str(message.get("id")))
            if future is not None and not future.done():
                future.set_result(message)
            return
        task = asyncio.get_running_loop().create_task(self._on_request(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
