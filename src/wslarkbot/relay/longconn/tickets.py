"""One-time connection tickets: the ``token`` query parameter of the bootstrap's ws URL. No I/O.

Feishu's bootstrap answer carries a ws URL that authenticates the connection by itself (long-connection.md §1:
"`URL` is a ws(s) URL carrying `device_id` ... and `service_id`"); the SDK dials it as-is and fetches a fresh
one on every reconnect, so a short-lived, single-use ticket is enough::

    token = base64url(app_id "\\n" device_id "\\n" expiry_ms) "." base64url(HMAC-SHA256(key, that))

The key is random per process, so a restarted relay refuses old tickets; clients re-bootstrap anyway. With
several relay nodes (``--redis``) the key is derived from the config's ``ticket_secret``
(:func:`key_from_secret`) so that any node validates any node's ticket, and one-time use is enforced in
Redis (cluster.py) after :meth:`TicketBook.verify`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...exceptions import WslarkbotError

__all__ = ["Ticket", "TicketBook", "TicketError", "TicketExpired", "key_from_secret"]


class TicketError(WslarkbotError):
    """The ticket is forged, malformed or was already used (the handshake answers 403: fatal for the SDK)."""


class TicketExpired(TicketError):
    """The ticket is authentic but too old or already used (the handshake answers 500: the SDK retries)."""


@dataclass(frozen=True)
class Ticket:
    app_id: str
    device_id: str
    expiry: float = 0.0  # seconds since the epoch


def key_from_secret(secret: str) -> bytes:
    """The HMAC key all nodes sharing ``ticket_secret`` use (domain-separated from other uses of it)."""
    return hmac.new(secret.encode("utf-8"), b"wslarkbot longconn ticket v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TicketBook:
    """Issues and redeems tickets. ``clock`` returns seconds (injectable for tests)."""

    def __init__(
        self, ttl: float, *, key: bytes | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._ttl = ttl
        self._key = key or os.urandom(32)
        self._clock = clock
        self._used: dict[str, float] = {}  # device_id -> expiry, to refuse replays until expiry

    def issue(self, app_id: str) -> tuple[str, str]:
        """A fresh ``(device_id, token)`` for ``app_id``."""
        device_id = secrets.token_hex(12)
        expiry_ms = int((self._clock() + self._ttl) * 1000)
        body = f"{app_id}\n{device_id}\n{expiry_ms}".encode()
        mac = hmac.new(self._key, body, hashlib.sha256).digest()
        return device_id, f"{_b64(body)}.{_b64(mac)}"

    def verify(self, token: str) -> Ticket:
        """Check a ticket's MAC and expiry without consuming it (the caller enforces one-time use).

        Raises:
            TicketError: forged or malformed. TicketExpired: authentic but expired.
        """
        try:
            body_text, mac_text = token.split(".", 1)
            body, mac = _unb64(body_text), _unb64(mac_text)
            app_id, device_id, expiry_text = body.decode("utf-8").split("\n")
            expiry = int(expiry_text) / 1000
        except (ValueError, UnicodeDecodeError):
            raise TicketError("malformed connection ticket") from None
        if not hmac.compare_digest(hmac.new(self._key, body, hashlib.sha256).digest(), mac):
            raise TicketError("invalid connection ticket")
        if expiry <= self._clock():
            raise TicketExpired("connection ticket expired")
        return Ticket(app_id=app_id, device_id=device_id, expiry=expiry)

    def redeem(self, token: str) -> Ticket:
        """Check and consume a ticket (one-time use tracked in this process).

        Raises:
            TicketError: forged or malformed. TicketExpired: authentic but expired or replayed.
        """
        ticket = self.verify(token)
        now = self._clock()
        self._used = {d: e for d, e in self._used.items() if e > now}
        if ticket.device_id in self._used:
            raise TicketExpired("connection ticket already used")
        self._used[ticket.device_id] = ticket.expiry
        return ticket
