"""The replay buffer in Redis, shared by the relay nodes (``--redis``); semantics of :class:`MemoryReplay`.

Keys per app (all with a PEXPIRE of ``replay_ttl``, refreshed on every put: an idle app's buffer vanishes)::

    wslarkbot:lc:replay:<app_id>:data   hash   entry id -> Entry JSON (payload base64)
    wslarkbot:lc:replay:<app_id>:due    zset   entry id -> ms when it may be claimed (lease end, or 0 = due)
    wslarkbot:lc:replay:<app_id>:born   zset   entry id -> ms when stored (TTL and the size limit)

Every operation is one Lua script, so the size check, the claim and the TTL purge are atomic across nodes.
Times come from the nodes' clocks (keep them NTP-synced; a skew shortens or lengthens leases by that much).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from .replay import Entry

__all__ = ["RedisReplay", "replay_keys"]

_PURGE = """
local function purge(oldest)
  local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', oldest)
  for _, id in ipairs(old) do
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
  end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', oldest) end
end
"""

# ARGV: id, entry json, now ms, oldest ms, size, lease end ms, ttl ms
_PUT = (
    _PURGE
    + """
purge(ARGV[4])
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
return 1
"""
)

# ARGV: now ms, oldest ms, limit, lease end ms
_CLAIM = (
    _PURGE
    + """
purge(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local body = redis.call('HGET', KEYS[1], id)
  if body then
    redis.call('ZADD', KEYS[2], ARGV[4], id)
    out[#out + 1] = body
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return out
"""
)

# ARGV: score ms, id...
_SET_DUE = """
for i = 2, #ARGV do redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[i]) end
return 1
"""

# ARGV: id
_DONE = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""


def replay_keys(app_id: str) -> list[str]:
    """``[data, due, born]`` keys of ``app_id``'s buffer."""
    base = f"wslarkbot:lc:replay:{app_id}:"
    return [base + "data", base + "due", base + "born"]


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class RedisReplay:
    """:class:`~.replay.ReplayStore` in Redis.

    Args:
        command: runs a coroutine function on a Redis client and maps link failures to
            :class:`~..limits.BackendUnavailable` (``RedisLink.command``).
        client: the Redis client the scripts are registered on.
    """

    def __init__(
        self,
        command: Callable[[Callable[[Any], Any]], Any],
        client: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._command = command
        self._clock = clock
        self._put = client.register_script(_PUT)
        self._claim = client.register_script(_CLAIM)
        self._set_due = client.register_script(_SET_DUE)
        self._done = client.register_script(_DONE)

    async def _run(self, script: Any, app_id: str, args: list[Any]) -> Any:
        return await self._command(lambda r: script(keys=replay_keys(app_id), args=args, client=r))

    async def put(self, app_id: str, entry: Entry, *, size: int, ttl: float, lease: float) -> bool:
        now = self._clock()
        args = [entry.id, entry.encode(), _ms(now), _ms(now - ttl), size, _ms(now + lease), _ms(ttl)]
        return bool(await self._run(self._put, app_id, args))

    async def claim(self, app_id: str, *, limit: int, ttl: float, lease: float) -> list[Entry]:
        now = self._clock()
        raw = await self._run(self._claim, app_id, [_ms(now), _ms(now - ttl), limit, _ms(now + lease)])
        return [Entry.decode(item) for item in raw]

    async def renew(self, app_id: str, ids: Iterable[str], lease: float) -> None:
        ids = list(ids)
        if ids:
            await self._run(self._set_due, app_id, [_ms(self._clock() + lease), *ids])

    async def release(self, app_id: str, entry_id: str) -> None:
        await self._run(self._set_due, app_id, [_ms(self._clock()), entry_id])

    async def done(self, app_id: str, entry_id: str) -> None:
        await self._run(self._done, app_id, [entry_id])

    async def count(self, app_id: str) -> int:
        return int(await self._command(lambda r: r.zcard(replay_keys(app_id)[2])))
