"""Delivery of one webhook to the app's client(s), on this node or, with ``--redis``, on any node.

Without a cluster :class:`Router` is :meth:`ClientRegistry.deliver`. With one, the app's connections of
every node are read from Redis (cluster.py) and:

* ``"one"``: a random connection of the cluster is chosen (each node weighted by its connection count, so
  every connection is equally likely, as in Feishu's cluster mode); a local one is served by the client
  registry, a remote one by a ``deliver`` message to its node, which answers with ``answer``. A node that
  has lost its clients answers ``none`` and the next node is tried while the deadline allows.
* ``"broadcast"``: every node with connections gets the event; the first ``{"code":200}`` wins.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import uuid
from typing import TYPE_CHECKING, Any

from ..limits import BackendUnavailable
from .race import first_success
from .registry import ClientRegistry, DeliveryTimeout, NoClientConnected

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["Router", "pick_node"]

log = logging.getLogger("wslarkbot.relay.longconn")


def pick_node(nodes: dict[str, int], tried: set[str], rng: random.Random) -> str | None:
    """A node not in ``tried``, chosen with probability proportional to its connection count."""
    left = [(node, count) for node, count in sorted(nodes.items()) if node not in tried and count > 0]
    if not left:
        return None
    return rng.choices([n for n, _ in left], weights=[c for _, c in left])[0]


class Router:
    """``deliver(app_id, payload, *, timeout, trace_id)`` to this node's clients and the cluster's."""

    def __init__(
        self, clients: ClientRegistry, cluster: Cluster | None = None, *, rng: random.Random | None = None
    ) -> None:
        self.clients = clients
        self.cluster = cluster
        self._rng = rng or random.Random()

    async def deliver(
        self, app_id: str, payload: bytes, *, timeout: float, trace_id: str | None = None
    ) -> dict[str, Any]:
        """Push ``payload`` to the app's client(s) and return the answer.

        Raises:
            NoClientConnected, DeliveryTimeout: as :meth:`ClientRegistry.deliver`.
            BackendUnavailable: Redis is down (the webhook answers 503).
        """
        if self.cluster is None:
            return await self.clients.deliver(app_id, payload, timeout=timeout, trace_id=trace_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            nodes = await self.cluster.nodes(app_id)
        except BackendUnavailable:
            if not self.clients.connections(app_id):
                raise
            nodes = {}  # Redis is down: this node's own clients still work
        if self.clients.connections(app_id):
            nodes.setdefault(self.cluster.node_id, len(self.clients.connections(app_id)))
        if self.clients.config.apps[app_id].delivery == "broadcast":
            return await self._broadcast(app_id, payload, list(nodes), deadline, trace_id)
        tried: set[str] = set()
        while (node := pick_node(nodes, tried, self._rng)) is not None:
            tried.add(node)
            try:
                return await self._to_node(node, app_id, payload, deadline - loop.time(), trace_id)
            except NoClientConnected:
                continue
        raise NoClientConnected(f"no open long connection for {app_id} on any node")

    async def _to_node(
        self, node: str, app_id: str, payload: bytes, timeout: float, trace_id: str | None
    ) -> dict[str, Any]:
        if timeout <= 0:
            raise DeliveryTimeout(f"no answer from {app_id} in time")
        assert self.cluster is not None
        if node == self.cluster.node_id:
            return await self.clients.deliver(app_id, payload, timeout=timeout, trace_id=trace_id)
        message = {
            "op": "deliver",
            "id": uuid.uuid4().hex,
            "app": app_id,
            "payload": base64.b64encode(payload).decode("ascii"),
            "trace": trace_id,
            "timeout": timeout,
        }
        try:
            reply = await self.cluster.request(node, message, timeout)
        except asyncio.TimeoutError:
            raise DeliveryTimeout(f"no answer from {app_id} via node {node} in time") from None
        error = reply.get("error")
        if error == "none":
            raise NoClientConnected(f"node {node} has no connection of {app_id}")
        if error is not None:
            raise DeliveryTimeout(f"no answer from {app_id} via node {node} in time")
        answer = reply.get("answer")
        return answer if isinstance(answer, dict) else {"code": 500}

    async def _broadcast(
        self, app_id: str, payload: bytes, nodes: list[str], deadline: float, trace_id: str | None
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        race = await first_success(
            (self._to_node(n, app_id, payload, deadline - loop.time(), trace_id) for n in nodes),
            fatal=lambda exc: not isinstance(exc, (DeliveryTimeout, NoClientConnected)),
        )
        if race.answer is not None:
            return race.answer
        if any(isinstance(exc, DeliveryTimeout) for exc in race.errors):
            raise DeliveryTimeout(f"no answer from {app_id} in time")
        raise NoClientConnected(f"no open long connection for {app_id} on any node")

    async def serve(self, message: dict[str, Any]) -> None:
        """Answer another node's ``deliver`` message with this node's clients."""
        assert self.cluster is not None
        reply: dict[str, Any] = {"op": "answer", "id": message.get("id")}
        try:
            app_id = str(message["app"])
            if app_id not in self.clients.config.apps:
                raise NoClientConnected(app_id)
            reply["answer"] = await self.clients.deliver(
                app_id,
                base64.b64decode(message["payload"]),
                timeout=float(message["timeout"]),
                trace_id=message.get("trace"),
            )
        except NoClientConnected:
            reply["error"] = "none"
        except DeliveryTimeout:
            reply["error"] = "timeout"
        except (KeyError, ValueError, TypeError):
            log.warning("gateway: malformed deliver message from node %s", message.get("from"))
            return
        self.cluster.reply(str(message.get("from")), reply)
