"""The asyncio OpenAPI client: drives the flows of :mod:`.core` with ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, TypeVar

import httpx

from .base import BaseOpenAPIClient
from .calls import next_page, page_params
from .core import (
    DEFAULT_HOST,
    HTTPRequest,
    HTTPResponse,
    NeedToken,
    OpenAPICore,
    OpenAPIResponse,
    Resource,
    Sleep,
    Step,
    http_arguments,
    saving,
)
from .tickets import AppTicketStore
from .token import AppType

__all__ = ["AsyncOpenAPIClient"]

T = TypeVar("T")


class AsyncOpenAPIClient(
    BaseOpenAPIClient[
        Awaitable[OpenAPIResponse], Awaitable[str], Awaitable[Resource], AsyncIterator[dict[str, Any]]
    ]
):
    """Feishu OpenAPI for one custom app, asyncio. Same methods as :class:`OpenAPIClient`, awaited.

    Use it from one event loop (``httpx.AsyncClient`` and the token ``asyncio.Lock`` belong to it).

    Example::

        async with AsyncOpenAPIClient("cli_xxx", "secret") as api:
            msg = await api.reply_text("om_xxx", "pong", reply_in_thread=True)
    """

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        host: str = DEFAULT_HOST,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        max_retries: int = 3,
        timeout: float = 10.0,
        app_type: AppType = "self_built",
        tickets: AppTicketStore | None = None,
    ) -> None:
        self._core = OpenAPICore(
            app_id, app_secret, clock=clock, max_retries=max_retries, app_type=app_type, tickets=tickets
        )
        self._http = httpx.AsyncClient(base_url=host.rstrip("/"), transport=transport, timeout=timeout)
        self._token_lock = asyncio.Lock()

    async def _drive(self, flow: Generator[Step, Any, T]) -> T:
        reply: Any = None
        while True:
            try:
                step = flow.send(reply)
            except StopIteration as stop:
                return stop.value
            if isinstance(step, HTTPRequest):
                reply = await self._send(step)
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)  # honouring x-ogw-ratelimit-reset (capped in core)
                reply = None
            elif isinstance(step, NeedToken):
                reply = await self._token(step.stale, step.tenant_key)

    async def _send(self, request: HTTPRequest) -> HTTPResponse:
        built = self._http.build_request(request.method, request.path, **http_arguments(request))
        if request.save_to is None:
            response = await self._http.send(built)
            return HTTPResponse(response.status_code, response.headers, response.content)
        response = await self._http.send(built, stream=True)
        try:
            if not saving(response.status_code, response.headers):
                return HTTPResponse(response.status_code, response.headers, await response.aread())
            with open(request.save_to, "wb") as out:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
            return HTTPResponse(response.status_code, response.headers, b"", request.save_to)
        finally:
            await response.aclose()

    def _download(self, request: HTTPRequest) -> Awaitable[Resource]:
        return self._drive(self._core.download_flow(request, self._tenant_key))

    async def _pages(self, request: HTTPRequest, page_size: int, items: str) -> AsyncIterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = dataclasses.replace(request, params=page_params(request.params, token, page_size))
            found, token = next_page(await self._call(page), items)
            for item in found:
                yield item
            if token is None:
                return

    async def _token(self, stale: str | None, tenant_key: str | None) -> str:
        async with self._token_lock:  # one fetch for N concurrent callers
            return await self._drive(self._core.token_flow(stale, tenant_key))

    def _call(self, request: HTTPRequest) -> Awaitable[OpenAPIResponse]:
        return self._drive(self._core.call_flow(request, self._tenant_key))

    def tenant_access_token(self) -> Awaitable[str]:
        """The current tenant_access_token (fetched on first use, cached, refreshed before expiry)."""
        return self._token(None, self._tenant_key)

    async def app_access_token(self) -> str:
        """The current app_access_token (a store app's is made from its latest ``app_ticket``)."""
        async with self._token_lock:
            return await self._drive(self._core.app_token_flow())

    def resend_app_ticket(self) -> Awaitable[OpenAPIResponse]:
        """Ask Feishu to push a fresh ``app_ticket`` event now (store apps; the bot stores it)."""
        return self._drive(self._core.resend_ticket_flow())

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncOpenAPIClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
