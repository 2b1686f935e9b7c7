"""One WebSocket connection to the relay: opening it (interruptible), its state, why it ended.

Also the client's own errors. No policy here: :class:`~wslarkbot.client.aio.AsyncClient` decides when to
connect and what a failure means.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl as ssl_module
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidMessage

from ..exceptions import ConfigurationError, WslarkbotError

__all__ = [
    "ConnectOptions",
    "Connection",
    "ReconnectGaveUp",
    "RelayAuthError",
    "close_reason",
    "describe_failure",
    "open_connection",
    "ssl_context",
]

USER_AGENT = "wslarkbot-client"


class RelayAuthError(ConfigurationError):
    """The relay refused the subscription with HTTP 401/403 and ``auth_retry_delay`` is None."""


class ReconnectGaveUp(WslarkbotError):
    """The reconnect policy's delays ran out; ``__cause__`` is the last connection error."""


@dataclass(frozen=True)
class ConnectOptions:
    """websockets ``connect()`` settings. Pings (RFC 6455 §5.5.2) every ``ping_interval`` s; a pong
    missing for ``ping_timeout`` s closes the connection (1011), so a dead relay is noticed. Closing waits
    up to ``close_timeout`` s for the relay's side of the closing handshake (a dead relay never sends
    it), so a dead relay is noticed at most ``ping_interval + ping_timeout + close_timeout`` s after it
    stopped answering."""

    open_timeout: float = 10.0
    ping_interval: float | None = 10.0
    ping_timeout: float | None = 10.0
    max_size: int = 4 * 1024 * 1024
    close_timeout: float | None = 10.0
    #: TLS for ``wss://``: None (the system's CA store, or ``$SSL_CERT_FILE``) or a context
    ssl: ssl_module.SSLContext | None = None


@dataclass
class Connection:
    """State of one open connection. ``protocol``: 2 after a hello, 1 after an envelope came first."""

    ws: ClientConnection
    opened_at: float
    protocol: int | None = None


async def open_connection(
    url: str, headers: Mapping[str, str], options: ConnectOptions, stop: asyncio.Event
) -> ClientConnection | None:
    """Open a connection (RFC 6455 §4.1 handshake), or return None if ``stop`` is set meanwhile, so a stop
    never waits for ``open_timeout`` against an unreachable relay.

    Raises:
        What websockets' ``connect()`` raises: ``InvalidStatus`` (HTTP 401, 403, 503, ...), ``OSError``,
        ``TimeoutError``, ``InvalidHandshake``, ``InvalidURI``.
    """

    extra: dict[str, Any] = {}
    if options.ssl is not None and url.startswith("wss:"):
        extra["ssl"] = options.ssl

    async def handshake() -> ClientConnection:
        return await connect(
            url,
            additional_headers=dict(headers),
            open_timeout=options.open_timeout,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            max_size=options.max_size,
            close_timeout=options.close_timeout,
            user_agent_header=USER_AGENT,
            **extra,
        )

    opening = asyncio.ensure_future(handshake())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not opening.done():
            opening.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await opening  # let a cancelled handshake finish unwinding
    if opening.cancelled():
        return None
    ws = opening.result()  # raises the handshake's error
    if stop.is_set():
        await ws.close(1001, "client stopping")
        return None
    return ws


def ssl_context(
    value: ssl_module.SSLContext | str | os.PathLike[str] | None, *, option: str = "ssl="
) -> ssl_module.SSLContext | None:
    """``Client(ssl=...)``: a context as given, or a CA bundle file (PEM) to trust, for a private CA.
    ``option`` names the setting in the error (``simulate`` passes ``--cacert ``).

    Raises:
        ConfigurationError: the file cannot be read as a CA bundle.
    """
    if value is None or isinstance(value, ssl_module.SSLContext):
        return value
    try:
        return ssl_module.create_default_context(cafile=os.fspath(value))
    except (OSError, ssl_module.SSLError) as exc:
        raise ConfigurationError(f"{option}{os.fspath(value)!r}: not a readable CA bundle ({exc})") from None


def describe_failure(exc: BaseException, *, tls: bool) -> str:
    """A one-line description of a failed connection attempt that says what to fix, for logs and
    ``status.last_error``. ``tls``: the client used ``wss://``."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return (
            f"{text}; the relay's TLS certificate was not accepted: for a private CA pass "
            "Client(ssl='<CA file>') (or an SSLContext), or set SSL_CERT_FILE"
        )
    if isinstance(exc, ssl_module.SSLError) and tls:
        return f"{text}; the relay does not speak TLS on this port: use protocol='http' (ws://)"
    if isinstance(exc, InvalidMessage) and not tls:
        return f"{text}; the relay did not answer in HTTP: if it speaks TLS, use protocol='https' (wss://)"
    return text


def close_reason(ws: ClientConnection) -> str:
    """A one-line description of how ``ws`` ended, for logs and ``status.last_error``."""
    rcvd = ws.protocol.close_rcvd
    if rcvd is not None:
        return f"closed by relay ({rcvd.code} {rcvd.reason})".rstrip()
    sent = ws.protocol.close_sent
    if sent is not None and sent.code == 1011:  # websockets' "keepalive ping timeout"
        return f"closed by client ({sent.code} {sent.reason}): no pong from the relay in time".rstrip()
    return "connection lost (no close frame)"
