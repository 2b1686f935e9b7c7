"""Who may subscribe to which channels. No network I/O.

Rules (docs/protocol.md "Access"):

* ``org_*`` channels need HTTP basic auth: the user name is the channel name and the password must verify
  against that user's htpasswd entry. With ``auth_apps`` the same holds for app channels (user = app id).
* One connection authenticates as one user, so it may hold at most one protected channel (open one
  connection per org, or subscribe an org and unprotected app channels together).
* No htpasswd configured: org channels are refused (403), unless ``allow_anonymous_orgs`` (dev/tests).
* Publishing webhooks and ``POST /sub/<request_id>`` replies need no auth (Feishu cannot send any; request
  ids are unguessable).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Mapping, Sequence

from ..exceptions import ConfigurationError
from ..wire import is_org_channel
from .config import RelayConfig
from .htpasswd import Htpasswd
from .limits import LimitExceeded
from .throttle import FailureThrottle

__all__ = ["REALM", "AccessPolicy", "parse_basic_auth"]

REALM = "wslarkbot"


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic ...`` header (RFC 7617), else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


#: The ``limit`` of a refusal for a wrong password (counted by the failed-login throttles).
WRONG_PASSWORD = "auth_password"


def throttled(wait: int) -> LimitExceeded:
    """The 429 for a login refused by a failed-login throttle (this node's or the shared one)."""
    return LimitExceeded(429, "auth_throttle", f"too many failed logins; retry in {wait} s", retry_after=wait)


def throttle_keys(user: str, remote: str | None) -> tuple[tuple[str, str | None], ...]:
    """What a failed login counts against: the client's address and the user name tried.

    A loopback peer is a reverse proxy in front (README): every client shares its address, so it is not
    counted as one client (the per-user count still applies).
    """
    return (("user", user),) if _is_loopback(remote) else (("addr", remote), ("user", user))


def login_keys(headers: Mapping[str, str], remote: str | None) -> tuple[tuple[str, str | None], ...]:
    """:func:`throttle_keys` of a request's basic-auth user, or none when it sends no credentials."""
    creds = parse_basic_auth(headers.get("Authorization"))
    return throttle_keys(creds[0], remote) if creds is not None else ()


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


class AccessPolicy:
    """Decides whether a subscription request may proceed.

    Raises:
        ConfigurationError: ``auth_apps`` without an htpasswd file, or the file cannot be read.
    """

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.users: Htpasswd | None = None
        if config.htpasswd:
            try:
                self.users = Htpasswd(config.htpasswd)
            except OSError as exc:
                raise ConfigurationError(f"cannot read htpasswd file {config.htpasswd!r}: {exc}") from exc
        elif config.auth_apps:
            raise ConfigurationError("--auth-apps needs --htpasswd")
        self.throttle = FailureThrottle(config.auth_fail_limit, config.auth_fail_window)

    def protected(self, channels: Sequence[str]) -> list[str]:
        """The channels of ``channels`` that need credentials."""
        if self.users is None:
            return []
        return [c for c in channels if is_org_channel(c) or self.config.auth_apps]

    def check(
        self, channels: Sequence[str], headers: Mapping[str, str], remote: str | None = None
    ) -> str | None:
        """Allow or refuse; returns the authenticated user (None when no credentials were needed).

        Blocking (bcrypt); call it from a worker thread.

        Args:
            remote: the client's address, for the failed-login throttle (:mod:`.throttle`).

        Raises:
            LimitExceeded: 401 (missing or wrong credentials; send ``WWW-Authenticate``), 403, or 429
            (too many failed logins from this address or for this user; ``retry_after`` set).
        """
        if self.users is None:
            orgs = [c for c in channels if is_org_channel(c)]
            if orgs and not self.config.allow_anonymous_orgs:
                raise LimitExceeded(
                    403,
                    "auth",
                    f"channel {orgs[0]} is an org channel and this relay has no --htpasswd configured",
                )
            return None
        needed = self.protected(channels)
        if not needed:
            return None
        if len(needed) > 1:
            raise LimitExceeded(
                403,
                "auth",
                f"one connection can authenticate for one protected channel, got {len(needed)}: "
                "open one connection per org (or app with --auth-apps)",
            )
        creds = parse_basic_auth(headers.get("Authorization"))
        if creds is None:
            raise LimitExceeded(401, "auth", f"channel {needed[0]} needs HTTP basic auth")
        user, password = creds
        keys = throttle_keys(user, remote)
        wait = self.throttle.retry_after(*keys)
        if wait is not None:
            raise throttled(wait)
        if not self.users.verify(user, password):
            self.throttle.failed(*keys)
            raise LimitExceeded(401, WRONG_PASSWORD, "wrong user name or password")
        self.throttle.succeeded(("addr", remote))
        if user != needed[0]:
            raise LimitExceeded(403, "auth", f"user {user} may not subscribe to channel {needed[0]}")
        return user
