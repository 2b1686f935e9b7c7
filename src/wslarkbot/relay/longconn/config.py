"""Per-app configuration of the long-connection gateway, loaded from a JSON or TOML file. No I/O but the read.

The file lists the Feishu apps whose bots connect with the official SDK (long-connection.md §2, "Custom host")
instead of the wslarkbot client. Each app carries what the relay needs to stand in for Feishu:

* ``app_secret_sha256`` — hex SHA-256 of the App Secret. The SDK sends the secret in clear on the bootstrap
  ``POST /callback/ws/endpoint`` (long-connection.md §1); the relay stores only its hash and compares in
  constant time. (``app_secret`` in clear is accepted too, for development, and hashed at load.)
* ``encrypt_key`` / ``verification_token`` — to verify and decrypt Feishu's webhook (protocol.md §2, §3).

Example (TOML)::

    [gateway]
    ping_interval = 120          # ClientConfig.PingInterval, seconds
    fragment_bytes = 65536       # payloads above this are split into `sum` frames

    [apps.cli_a1b2c3]
    app_secret_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    encrypt_key = "..."
    verification_token = "..."
    max_connections = 50         # Feishu's limit; more is allowed here
    delivery = "one"             # "one" (Feishu's cluster mode) or "broadcast"
    replay = true                # buffer events while no bot is connected (replay.py)
    replay_size = 1000           # most buffered events per app; beyond: 503, Feishu retries
    replay_ttl = 3600            # seconds a buffered event is kept

``ticket_secret`` (in ``[gateway]``) makes connection tickets valid on every relay node; it is required with
``--redis`` (cluster.py).

Secrets are excluded from ``repr`` so that logging a config never leaks them.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...crypto import secure_equals
from ...exceptions import ConfigurationError
from ..config_file import toml_loads

__all__ = [
    "DELIVERY_MODES",
    "MAX_FRAGMENT_BYTES",
    "GatewayApp",
    "GatewayConfig",
    "hash_secret",
    "load_gateway_config",
]

DELIVERY_MODES = ("one", "broadcast")
# lark-oapi dials with websockets' default max_size of 1 MiB per message; stay well below it with headers.
MAX_FRAGMENT_BYTES = 1_000_000
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


def hash_secret(app_secret: str) -> str:
    """Hex SHA-256 of an App Secret, the form stored in the gateway config."""
    return hashlib.sha256(app_secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class GatewayApp:
    """One Feishu app served over the long-connection protocol."""

    app_id: str
    app_secret_sha256: str = field(repr=False)
    encrypt_key: str = field(default="", repr=False)
    verification_token: str = field(default="", repr=False)
    max_connections: int = 50
    delivery: str = "one"
    replay: bool = False
    replay_size: int = 1000
    replay_ttl: float = 3600.0

    def __post_init__(self) -> None:
        if not self.app_id:
            raise ConfigurationError("gateway app needs an app_id")
        if not _HEX64.match(self.app_secret_sha256):
            raise ConfigurationError(f"app {self.app_id}: app_secret_sha256 must be 64 lowercase hex digits")
        if self.max_connections <= 0:
            raise ConfigurationError(f"app {self.app_id}: max_connections must be > 0")
        if not (self.encrypt_key or self.verification_token):
            # Without either, anyone could push events to the bots through /hook/<app_id>.
            raise ConfigurationError(f"app {self.app_id}: set encrypt_key and/or verification_token")
        if self.delivery not in DELIVERY_MODES:
            raise ConfigurationError(f"app {self.app_id}: delivery must be one of {DELIVERY_MODES}")
        if not isinstance(self.replay, bool):
            raise ConfigurationError(f"app {self.app_id}: replay must be true or false")
        if self.replay_size <= 0 or self.replay_ttl <= 0:
            raise ConfigurationError(f"app {self.app_id}: replay_size and replay_ttl must be > 0")

    def secret_matches(self, app_secret: str) -> bool:
        """Constant-time check of the secret sent on the bootstrap request."""
        return secure_equals(hash_secret(app_secret), self.app_secret_sha256)


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway's apps and the protocol knobs it sends to clients (long-connection.md §1).

    ``reconnect_*`` and ``ping_interval`` are the ``ClientConfig`` seconds sent with the bootstrap answer and
    with every pong. ``event_timeout`` bounds the wait for the client's answer (Feishu allows 3 s).
    ``public_url`` overrides the ``ws(s)://host`` derived from the Host / X-Forwarded-* headers.
    ``ticket_secret`` is shared by all relay nodes so a ticket issued by one validates on another (required
    with ``--redis``; without it the ticket key is random per process).
    """

    apps: Mapping[str, GatewayApp] = field(default_factory=dict)
    ping_interval: int = 120
    reconnect_count: int = -1
    reconnect_interval: int = 120
    reconnect_nonce: int = 30
    fragment_bytes: int = 65536
    event_timeout: float = 2.8
    ticket_ttl: float = 60.0
    heartbeat: float = 30.0
    retry_after: int = 5
    public_url: str | None = None
    ticket_secret: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.ticket_secret is not None and len(self.ticket_secret) < 16:
            raise ConfigurationError("ticket_secret must be at least 16 characters")
        if not 1 <= self.fragment_bytes <= MAX_FRAGMENT_BYTES:
            raise ConfigurationError(f"fragment_bytes must be 1..{MAX_FRAGMENT_BYTES}")
        for name in ("event_timeout", "ticket_ttl", "ping_interval"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be > 0")
        if self.reconnect_interval < 0 or self.reconnect_nonce < 0 or self.heartbeat < 0:
            raise ConfigurationError("reconnect_interval, reconnect_nonce and heartbeat must be >= 0")

    def client_config(self) -> dict[str, int]:
        """The ``ClientConfig`` object; every key is always present (the SDK assigns all four)."""
        return {
            "ReconnectCount": self.reconnect_count,
            "ReconnectInterval": self.reconnect_interval,
            "ReconnectNonce": self.reconnect_nonce,
            "PingInterval": self.ping_interval,
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GatewayConfig:
        """Build from the parsed file: ``{"gateway": {...knobs}, "apps": {app_id: {...}}}``.

        Raises:
            ConfigurationError: unknown keys, wrong types or values.
        """
        knobs = dict(data.get("gateway") or {})
        unknown_top = set(data) - {"gateway", "apps"}
        if unknown_top:
            raise ConfigurationError(f"unknown gateway config section(s): {sorted(unknown_top)}")
        apps: dict[str, GatewayApp] = {}
        for app_id, raw in (data.get("apps") or {}).items():
            if not isinstance(raw, Mapping):
                raise ConfigurationError(f"app {app_id}: expected a table/object")
            entry = dict(raw)
            clear = entry.pop("app_secret", None)
            if clear is not None:
                if "app_secret_sha256" in entry:
                    raise ConfigurationError(f"app {app_id}: give app_secret or app_secret_sha256, not both")
                entry["app_secret_sha256"] = hash_secret(str(clear))
            if "app_secret_sha256" not in entry:
                raise ConfigurationError(f"app {app_id}: app_secret_sha256 is required")
            entry["app_secret_sha256"] = str(entry["app_secret_sha256"]).lower()
            try:
                apps[app_id] = GatewayApp(app_id=app_id, **entry)
            except TypeError as exc:
                raise ConfigurationError(f"app {app_id}: unknown key ({exc})") from None
        try:
            return cls(apps=apps, **knobs)
        except TypeError as exc:
            raise ConfigurationError(f"unknown [gateway] key ({exc})") from None


def load_gateway_config(path: str | pathlib.Path) -> GatewayConfig:
    """Read a ``.json`` or ``.toml`` gateway config file.

    Raises:
        ConfigurationError: unreadable, unparsable or invalid file (the message never contains secrets).
    """
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read gateway config {path}: {exc.strerror}") from None
    try:
        data = toml_loads(raw.decode("utf-8")) if path.suffix.lower() == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        # No str(exc): a parser message can quote a line of the file, secrets included.
        raise ConfigurationError(f"gateway config {path} is not valid {path.suffix or 'JSON'}") from None
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"gateway config {path} must be a table/object at the top")
    return GatewayConfig.from_mapping(data)
