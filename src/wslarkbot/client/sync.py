"""``Client``: the blocking front of :class:`~wslarkbot.client.aio.AsyncClient`, the original API.

``Client(bot, server="relay.example.com").start()`` runs the asyncio core with :func:`asyncio.run` in the
calling thread until SIGINT/SIGTERM (main thread only) or :meth:`Client.stop` from another thread. Stopping
is graceful: no new envelope is read, handlers in flight get ``shutdown_grace`` seconds (default 10) to
finish and answer, then the socket closes. A second SIGINT/SIGTERM stops at once.

Example::

    from wslarkbot import Bot, Client

    bot = Bot("cli_xxx", app_secret="...", verification_token="...", encrypt_key="...")

    @bot.on_text
    def echo(event):
        bot.reply_text(event.message_id, "echo: " + (event.text or ""))

    Client(bot, server="relay.example.com").start()
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Iterable
from typing import Any

from ..exceptions import ConfigurationError
from .aio import AsyncClient
from .config import Endpoint
from .dispatch import BotLike
from .status import ClientStatus

__all__ = ["Client"]

logger = logging.getLogger("wslarkbot.client")


class Client:
    """Blocking client: same arguments as :class:`AsyncClient` (``*bot``, ``bots=``, ``server=``,
    ``protocol=``, ``org_name=``, ``org_passwd=``, ``group=`` and the tuning keywords).

    Raises:
        ConfigurationError: see :class:`AsyncClient`.
    """

    def __init__(
        self,
        *bot: BotLike,
        bots: Iterable[BotLike] | None = None,
        server: str | None = None,
        protocol: str | None = None,
        org_name: str = "",
        org_passwd: str = "",
        **options: Any,
    ) -> None:
        self._core = AsyncClient(
            *bot,
            bots=bots,
            server=server,
            protocol=protocol,
            org_name=org_name,
            org_passwd=org_passwd,
            **options,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done = threading.Event()
        self._done.set()

    @property
    def status(self) -> ClientStatus:
        return self._core.status

    @property
    def endpoint(self) -> Endpoint:
        return self._core.endpoint

    @property
    def bots(self) -> list[BotLike]:
        return self._core.bots

    def hook_urls(self) -> dict[str, str]:
        """``{app_id: URL to paste into the Feishu console}``."""
        return self._core.hook_urls()

    def add_bot(self, bot: BotLike) -> None:
        """Add a bot, from any thread, before or while running (see :meth:`AsyncClient.add_bot`)."""
        loop = self._loop
        if loop is None:
            self._core.add_bot(bot)
            return
        app_id = getattr(bot, "app_id", None)
        if not isinstance(app_id, str) or not app_id:
            raise ConfigurationError(f"{bot!r} has no app_id")
        existing = {b.app_id: b for b in self._core.bots}.get(app_id)
        if existing is not None and existing is not bot:
            raise ConfigurationError(f"two bots with app_id {app_id!r}")
        loop.call_soon_threadsafe(self._core.add_bot, bot)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until connected and the relay's protocol is known; False on timeout."""
        return self.status.wait_for(lambda s: s.connected and s.protocol is not None, timeout)

    def start(self, debug: bool = False) -> None:
        """Connect and serve until stopped (blocks); once the relay connection is up, print the request URLs
        to paste into the Feishu console (to stderr).

        Args:
            debug: log ``wslarkbot`` at DEBUG level (adds a stderr handler if logging is unconfigured).

        Raises:
            RelayAuthError, ReconnectGaveUp: see :meth:`AsyncClient.run`.
        """
        if debug:
            _enable_debug_logging()
        self._done.clear()
        try:
            asyncio.run(self._main())
        finally:
            self._loop = None
            self._done.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        installed: list[signal.Signals] = []
        signals_seen = 0

        def on_signal(signum: signal.Signals) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                logger.warning("%s received: stopping (send it again to stop at once)", signum.name)
                self._core.request_stop()
            else:
                logger.warning("%s received again: stopping without waiting for handlers", signum.name)
                self._core.request_stop(force=True)

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(signum, on_signal, signum)
                except (NotImplementedError, RuntimeError):  # Windows, or a non-main interpreter
                    continue
                installed.append(signum)
        announced = asyncio.Event()
        announcer = loop.create_task(self._announce(announced))
        try:
            await self._core.run()
        finally:
            announcer.cancel()
            if not announced.is_set() and self.status.connections:  # connected, stopped before it printed
                self._print_urls()
            for signum in installed:
                loop.remove_signal_handler(signum)

    async def _announce(self, done: asyncio.Event) -> None:
        """Print the request URLs once the first connection is up: a URL printed before would be pasted
        into the console while the relay cannot reach the bot yet, and the console's challenge would fail."""
        while not await asyncio.to_thread(self.status.wait_for, lambda s: s.connected, 0.5):
            pass
        self._print_urls()
        done.set()

    def _print_urls(self) -> None:
        for app_id, url in self.hook_urls().items():
            print(
                f"wslarkbot: connected to the relay; Feishu request URL for {app_id}: {url}",
                file=sys.stderr,
                flush=True,
            )

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the client to stop, from any thread; wait up to ``timeout`` s (None: no limit) for
        :meth:`start` to return. Returns True if it has returned. From a handler, pass ``timeout=0``
        (waiting there would wait for the handler itself until ``shutdown_grace``)."""
        self._core.request_stop()
        if self._loop is not None and _on_loop_thread(self._loop):
            return False
        return self._done.wait(timeout)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _enable_debug_logging() -> None:
    log = logging.getLogger("wslarkbot")
    log.setLevel(logging.DEBUG)
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
