"""``--redis`` URLs: one Redis (``redis://``, ``rediss://``, ``unix://``) or a master found through Redis
Sentinel (``redis+sentinel://``, ``rediss+sentinel://``; docs/deploy.md "Redis Sentinel").

No import of ``redis`` until a client is made: ``RelayConfig`` checks URLs with :func:`check_redis_url`
without the extra installed.

A Sentinel URL names the sentinels, the master's name and the database::

    redis+sentinel://[[user]:password@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]
    redis+sentinel://10.0.0.5:26379,10.0.0.6:26379,10.0.0.7:26379/mymaster/0

The password (if any) is the master's and the sentinels'. ``rediss+sentinel://`` speaks TLS to both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = [
    "PLAIN_SCHEMES",
    "REDIS_SCHEMES",
    "SENTINEL_SCHEMES",
    "SentinelTarget",
    "check_redis_url",
    "is_sentinel",
    "make_client",
    "parse_sentinel_url",
]

PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
REDIS_SCHEMES = PLAIN_SCHEMES + SENTINEL_SCHEMES


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL says."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEMES)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse a Sentinel URL.

    Raises:
        ConfigurationError: no sentinels, a bad port, no master name, a database that is not a number.
    """
    scheme, _, rest = url.partition("://")
    hosts_part, _, path = rest.partition("/")
    userinfo, at, hosts = hosts_part.rpartition("@")
    if not at:
        hosts, userinfo = hosts_part, ""
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels: list[tuple[str, int]] = []
    for item in filter(None, hosts.split(",")):
        host, colon, port = item.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"redis sentinel URL: {item!r} is not HOST:PORT (e.g. 10.0.0.5:26379)")
        sentinels.append((host.strip("[]"), int(port)))
    if not sentinels:
        raise ConfigurationError(
            "redis sentinel URL names no sentinel: redis+sentinel://HOST:PORT[,...]/MASTER"
        )
    master, _, db = path.partition("/")
    if not master:
        raise ConfigurationError("redis sentinel URL names no master: redis+sentinel://HOST:PORT/MASTER[/DB]")
    db = db.strip("/")
    if db and not db.isdigit():
        raise ConfigurationError(f"redis sentinel URL: the database must be a number, not {db!r}")
    return SentinelTarget(
        tuple(sentinels), master, int(db or 0), username, password, tls=scheme == "rediss+sentinel"
    )


def check_redis_url(url: str) -> None:
    """Raises ConfigurationError for a URL ``--redis`` cannot use."""
    if not url.startswith(REDIS_SCHEMES):
        raise ConfigurationError(f"redis_url must start with one of {', '.join(REDIS_SCHEMES)}")
    if is_sentinel(url):
        parse_sentinel_url(url)


def make_client(url: str, **options: Any) -> aioredis.Redis:
    """A redis-py asyncio client for ``url``: ``Redis.from_url``, or the master of a Sentinel URL (the
    sentinels are asked again for the master whenever a connection to it fails, so a failover is followed).

    ``options`` are the connection options (timeouts, keepalive, retry, client name); they apply to the
    sentinels too, but for the client name.
    """
    import redis.asyncio as aioredis
    from redis.asyncio.sentinel import Sentinel

    if not is_sentinel(url):
        return aioredis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    connection: dict[str, Any] = {**options, "username": target.username, "password": target.password}
    if target.tls:
        connection["ssl"] = True
    sentinel_options = {k: v for k, v in connection.items() if k not in ("client_name", "protocol")}
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options, db=target.db, **connection)
    client: aioredis.Redis = sentinel.master_for(target.master)
    return client
