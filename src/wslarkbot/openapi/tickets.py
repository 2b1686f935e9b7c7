"""Where a store app's ``app_ticket`` is kept: in memory, or in SQLite so a restart need not wait for the
next one (Feishu pushes a ticket every hour; docs/openapi.md "Store apps").

A store is shared by the bot (which stores each ``app_ticket`` event) and its OpenAPI clients (which read
it to make the ``app_access_token``). Implement :class:`AppTicketStore` for anything else (Redis, a file).
"""

from __future__ import annotations

import abc
import sqlite3
import threading
import time
from collections.abc import Callable

__all__ = ["AppTicketStore", "MemoryTicketStore", "SQLiteTicketStore"]


class AppTicketStore(abc.ABC):
    """The latest ``app_ticket`` per app id. Methods may be called from any thread."""

    @abc.abstractmethod
    def get(self, app_id: str) -> str | None:
        """The latest ticket of ``app_id``, or None if none arrived yet."""

    @abc.abstractmethod
    def put(self, app_id: str, ticket: str) -> None:
        """Keep ``ticket`` as ``app_id``'s latest."""


class MemoryTicketStore(AppTicketStore):
    """Tickets in a dict (lost on restart: the client then asks Feishu to resend one)."""

    def __init__(self) -> None:
        self._tickets: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, app_id: str) -> str | None:
        with self._lock:
            return self._tickets.get(app_id)

    def put(self, app_id: str, ticket: str) -> None:
        with self._lock:
            self._tickets[app_id] = ticket


class SQLiteTicketStore(AppTicketStore):
    """Tickets in one SQLite table (``path``; ``":memory:"`` for tests), kept across restarts."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS app_tickets "
            "(app_id TEXT PRIMARY KEY, ticket TEXT NOT NULL, received_at REAL NOT NULL)"
        )

    def get(self, app_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT ticket FROM app_tickets WHERE app_id = ?", (app_id,)).fetchone()
        return str(row[0]) if row else None

    def put(self, app_id: str, ticket: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO app_tickets (app_id, ticket, received_at) VALUES (?, ?, ?) ON CONFLICT(app_id) "
                "DO UPDATE SET ticket = excluded.ticket, received_at = excluded.received_at",
                (app_id, ticket, self._clock()),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
