"""A fake Feishu OpenAPI on 127.0.0.1, for tests of bots that call Feishu (protocol.md §8, §11).

:class:`FakeOpenAPI` serves the rules of :class:`~wslarkbot.sim.openapi_state.OpenAPIState` (what is
modelled is listed there) over HTTP, from an aiohttp server on its own
:class:`~wslarkbot._background.BackgroundLoop` thread, so sync code that blocks on HTTP and asyncio tests
can both use it::

    with FakeOpenAPI() as api:
        api.add_app("cli_test", "secret")
        client = OpenAPIClient("cli_test", "secret", host=api.url)
        client.send_text("ou_1", "hi")
        [call] = api.wait_for_calls("/im/v1/messages")
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from .._background import BackgroundLoop
from ..exceptions import WslarkbotError
from .openapi_messages import StoredMessage
from .openapi_state import FakeRequest, OpenAPIState, RecordedCall

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["FakeOpenAPI", "NotStartedError", "RecordedCall", "StoredMessage"]


class NotStartedError(WslarkbotError, RuntimeError):
    """The fake is not serving yet (``start()`` or ``with FakeOpenAPI() as api``), so it has no URL."""


class FakeOpenAPI(OpenAPIState):
    """Feishu's OpenAPI, faked and served. Thread-safe: the server runs on its own loop; tests read from any
    thread. Configuration (``add_app``, ``inject_*``...) and inspection (``calls``, ``wait_for_calls``...)
    are :class:`OpenAPIState`'s; this class adds the HTTP server and :meth:`pause` / :meth:`resume`.

    Args:
        clock: epoch seconds for token / card-token expiry, ``uuid`` windows and message age.
        app_rate_limit: messaging requests per second per app before HTTP 429.
        patch_qps: PATCHes per second per message before 230020.
        host: the address to listen on.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        app_rate_limit: int = 50,
        patch_qps: int = 5,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(clock=clock, app_rate_limit=app_rate_limit, patch_qps=patch_qps)
        self._host = host
        self._pause_lock = threading.Lock()
        self._pauses: list[tuple[str, asyncio.Event]] = []
        self._bg: BackgroundLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: pass it as the client's ``host``."""
        if not self.port:
            raise NotStartedError("FakeOpenAPI is not started")
        return f"http://{self._host}:{self.port}"

    def start(self) -> FakeOpenAPI:
        """Start serving on a free port (blocks until listening)."""
        if self._bg is not None:
            return self
        self._bg = BackgroundLoop(name="fake-openapi")
        self.port = self._bg.run(self._start(), timeout=10)
        return self

    async def _start(self) -> int:
        # The "relay" extra, imported only when serving: ``import wslarkbot.sim`` works without it.
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, 0)
        await site.start()
        return int(self._runner.addresses[0][1])

    def stop(self) -> None:
        """Release paused requests, stop the server and its thread."""
        if self._bg is None:
            return
        self.resume()
        if self._runner is not None:
            self._bg.run(self._runner.cleanup(), timeout=10)
        self._bg.stop()
        self._bg = None

    def __enter__(self) -> FakeOpenAPI:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- holding requests -----------------------------------------------------------------------------

    def pause(self, path_contains: str) -> None:
        """Hold matching requests (recorded, not answered) until :meth:`resume`."""
        with self._pause_lock:
            self._pauses.append((path_contains, asyncio.Event()))

    def resume(self) -> None:
        """Release every held request."""
        with self._pause_lock:
            events = [event for _, event in self._pauses]
            self._pauses.clear()
        if self._bg is not None:
            for event in events:
                self._bg.loop.call_soon_threadsafe(event.set)

    # -- HTTP ---------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fake = FakeRequest(
            request.method, request.path, dict(request.query), dict(request.headers), await request.read()
        )
        call = self.record(fake)
        with self._pause_lock:
            held = [event for sub, event in self._pauses if sub in request.path]
        for event in held:
            await event.wait()
        answer = self.answer(fake, call)
        from aiohttp import web

        if answer.file is not None:
            disposition = f'attachment; filename="{answer.file.filename}"'
            return web.Response(
                body=answer.file.content,
                headers={**answer.headers, "Content-Disposition": disposition},
                content_type=answer.file.content_type,
            )
        if answer.body is None:
            return web.Response(status=answer.status, text="404 page not found", headers=answer.headers)
        return web.json_response(answer.body, status=answer.status, headers=answer.headers)
