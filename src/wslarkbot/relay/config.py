"""``RelayConfig``: each relay knob is a ``wslarkbot serve`` flag and a ``WSLARKBOT_*`` variable.

No I/O and no aiohttp import here, so the CLI can build its ``--help`` without the relay extra.
The flag of a field is ``--`` plus the field name with ``-`` for ``_``; its environment variable is
``WSLARKBOT_`` plus the upper-cased field name (``max_body_bytes`` -> ``--max-body-bytes``,
``WSLARKBOT_MAX_BODY_BYTES``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import ConfigurationError
from .redis_url import REDIS_SCHEMES, check_redis_url
from .tenants import TenantLimit

__all__ = [
    "ENV_PREFIX",
    "MIB",
    "REDIS_SCHEMES",
    "RelayConfig",
    "env_name",
    "flag_name",
    "option_fields",
    "parse_bool",
]

ENV_PREFIX = "WSLARKBOT_"
MIB = 1024 * 1024


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RelayConfig:
    """Configuration of one relay server. Defaults suit production behind Feishu's deadlines.

    Feishu wants the url_verification challenge back within 1 s and everything else within 3 s
    (shared/feishu/protocol.md §4, §5), so the waits default to 0.9 s and 2.8 s: the relay answers
    honestly (504) before Feishu gives up, and Feishu retries events it did not get a 200 for.
    """

    host: str = _opt("0.0.0.0", "interface to listen on")
    port: int = _opt(8888, "TCP port to listen on (0: pick a free port; the log line shows it)")
    htpasswd: str | None = _opt(
        None, "htpasswd file (bcrypt, apr1 or SHA entries) guarding org_* channels; user = channel name"
    )
    auth_apps: bool = _opt(False, "also require basic auth for app channels (user = app id)")
    allow_anonymous_orgs: bool = _opt(
        False, "let anyone subscribe to org_* channels when no htpasswd is configured (dev/tests only)"
    )
    challenge_timeout: float = _opt(0.9, "seconds to wait for the bot's url_verification answer")
    callback_timeout: float = _opt(2.8, "seconds to wait for the bot's card/url-preview callback answer")
    ack_timeout: float = _opt(2.8, "seconds to wait for a protocol-2 bot's reply or ack to an event")
    heartbeat: float = _opt(10.0, "seconds between WebSocket pings; a peer silent for half of it is dropped")
    max_body_bytes: int = _opt(MIB, "largest webhook body accepted (413 above)")
    max_channels_per_subscription: int = _opt(64, "most channels one WebSocket may subscribe to (400 above)")
    max_subscribers_per_channel: int = _opt(1000, "most WebSockets on one channel (503 on subscribe above)")
    max_pending_replies: int = _opt(10000, "most webhook requests waiting for a bot at once (503 above)")
    max_ws_message_bytes: int = _opt(MIB, "largest WebSocket message accepted from a client (closed 1009)")
    max_subscriber_buffer_bytes: int = _opt(
        8 * MIB, "frames queued for one slow subscriber before it is disconnected (1013)"
    )
    retry_after: int = _opt(5, "Retry-After seconds on 503 answers")
    shutdown_timeout: float = _opt(2.0, "seconds to let requests finish on shutdown")
    fast_path: bool = _opt(
        True,
        "serve webhooks, replies and subscriber WebSockets with the relay's own HTTP/1.1 protocol, handing "
        "other requests to aiohttp on the same port (docs/performance.md); false: aiohttp serves all",
    )
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_json: bool = _opt(False, "log one JSON object per line")
    # Operator pages (relay/admin.py): GET /dashboard needs these; GET /metrics too with metrics_auth.
    admin_user: str | None = _opt(None, "user name for /dashboard (HTTP basic auth); unset: dashboard off")
    admin_password: str | None = field(
        default=None,
        repr=False,
        metadata={"help": "admin password or its htpasswd hash ($2y$, $apr1$, {SHA}); prefer the env var"},
    )
    metrics_auth: bool = _opt(False, "require the admin credentials for /metrics too (default: open)")
    gateway_config: str | None = _opt(
        None,
        "gateway config (.toml/.json) listing apps served over Feishu's long-connection protocol "
        "(docs/long-connection.md)",
    )
    redis_url: str | None = field(
        default=None,
        repr=False,  # may carry a password (redis://:secret@host)
        metadata={
            "help": "share subscriptions and replies with other relay nodes through this Redis "
            "(redis://[:password@]host:6379/0, rediss://, unix://; or a Sentinel-managed master: "
            "redis+sentinel://host:26379[,host:26379...]/mymaster[/db]); unset: this process alone",
        },
    )
    redis_wait_replicas: int = _opt(
        -1,
        "replicas that must confirm a buffered event (Redis WAIT) before it is answered 200, so a failover "
        "cannot lose it; -1: 1 with redis+sentinel://, else 0",
    )

    buffer: str | None = _opt(
        None,
        "buffer events of these channels (comma list of fnmatch patterns, e.g. 'cli_*,org_acme') and replay "
        "them to subscribers that connect later (docs/delivery.md); unset: nothing buffered",
    )
    auth_fail_limit: int = _opt(
        10,
        "failed basic-auth logins per client address (and per user name) within --auth-fail-window before "
        "further attempts get 429 + Retry-After without a password check; 0: no throttle",
    )
    auth_fail_window: float = _opt(60.0, "seconds over which failed logins are counted")
    buffer_size: int = _opt(1000, "most events kept per buffered channel (503 when all are unacked)")
    buffer_ttl: float = _opt(3600.0, "seconds a buffered event is kept (acked or not)")
    metrics_per_channel: bool = _opt(
        False,
        "label /metrics by channel too (wslarkbot_channel_webhooks_total{channel,outcome}), for at most "
        '--metrics-channel-cap channels (the rest count as channel="_other")',
    )
    metrics_channel_cap: int = _opt(100, "most distinct channel labels on /metrics (metrics_per_channel)")
    #: per-channel limits, from the config file's [tenants.<channel>] tables only (relay/tenants.py)
    tenants: Mapping[str, TenantLimit] = field(
        default_factory=dict,
        metadata={"help": "per-tenant limits ([tenants.<channel>] tables)", "file_only": True},
    )
    buffer_stall_after: float = _opt(
        30.0,
        "report a buffered event still unacked after this many seconds while its channel has had a "
        "subscriber on this node as long (a warning per event, /status buffer_stalled, "
        "wslarkbot_buffer_stalled_events); 0: off",
    )

    def __post_init__(self) -> None:
        positive = (
            "challenge_timeout",
            "callback_timeout",
            "ack_timeout",
            "max_body_bytes",
            "max_channels_per_subscription",
            "max_subscribers_per_channel",
            "max_pending_replies",
            "max_ws_message_bytes",
            "max_subscriber_buffer_bytes",
            "buffer_size",
            "buffer_ttl",
            "metrics_channel_cap",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port must be 0..65535, got {self.port}")
        if self.heartbeat < 0:
            raise ConfigurationError("heartbeat must be >= 0 (0 disables WebSocket pings)")
        if self.auth_fail_limit < 0 or self.auth_fail_window <= 0:
            raise ConfigurationError("auth_fail_limit must be >= 0 and auth_fail_window > 0")
        if self.buffer_stall_after < 0:
            raise ConfigurationError("buffer_stall_after must be >= 0 (0 disables stall reports)")
        if self.redis_url is not None:
            check_redis_url(self.redis_url)
        if self.redis_wait_replicas < -1:
            raise ConfigurationError("redis_wait_replicas must be >= 0, or -1 (automatic)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> RelayConfig:
        """Build a config from ``WSLARKBOT_*`` variables; ``overrides`` win over the environment.

        Raises:
            ConfigurationError: a variable does not parse as its field's type.
        """
        return cls(**{**cls.env_values(environ), **overrides})

    @classmethod
    def env_values(cls, environ: Mapping[str, str]) -> dict[str, Any]:
        """The fields set by ``WSLARKBOT_*`` variables in ``environ``, converted.

        Raises:
            ConfigurationError: a variable does not parse as its field's type.
        """
        values: dict[str, Any] = {}
        for f in option_fields():
            raw = environ.get(env_name(f.name))
            if raw is not None:
                values[f.name] = convert(f, raw)
        return values

    def replace(self, **changes: Any) -> RelayConfig:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def option_fields() -> list[dataclasses.Field[Any]]:
    """The fields that are flags and variables (all but the config file's tables, such as ``tenants``)."""
    return [f for f in dataclasses.fields(RelayConfig) if not f.metadata.get("file_only")]


#: Fields whose flag and variable are shorter than the field name: ``redis_url`` -> ``--redis``.
_SHORT_NAMES = {"redis_url": "redis"}


def flag_name(field_name: str) -> str:
    return "--" + _SHORT_NAMES.get(field_name, field_name).replace("_", "-")


def env_name(field_name: str) -> str:
    return ENV_PREFIX + _SHORT_NAMES.get(field_name, field_name).upper()


def parse_bool(text: str) -> bool:
    """``1/true/yes/on`` and ``0/false/no/off`` (any case)."""
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"not a boolean: {text!r}")


def field_kind(f: dataclasses.Field[Any]) -> str:
    """``bool``, ``int``, ``float`` or ``str`` (annotations are strings under PEP 563)."""
    ann = str(f.type)
    for kind in ("bool", "int", "float"):
        if ann == kind:
            return kind
    return "str"


def convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = field_kind(f)
    try:
        if kind == "bool":
            return parse_bool(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{env_name(f.name)}={raw!r} is not a valid {kind}") from exc
    return raw or None if f.default is None else raw
