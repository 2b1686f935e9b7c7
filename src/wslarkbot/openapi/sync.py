"""The blocking OpenAPI client: drives the flows of :mod:`.core` with ``httpx.Client``."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Generator, Iterator
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

__all__ = ["OpenAPIClient"]

T = TypeVar("T")


class OpenAPIClient(BaseOpenAPIClient[OpenAPIResponse, str, Resource, Iterator[dict[str, Any]]]):
    """Feishu OpenAPI for one custom app, blocking. Safe to share between threads.

    Example::

        with OpenAPIClient("cli_xxx", "secret") as api:
            msg = api.send_text("ou_xxx", "hello")
            print(msg["message_id"])

    Args:
        host: ``https://open.feishu.cn`` (Feishu) or ``https://open.larksuite.com`` (Lark), or a test server.
        transport: an ``httpx.BaseTransport`` to use instead of the network.
        clock: epoch seconds, for token expiry.
        max_retries: retries after a rate-limited answer.
        timeout: seconds per HTTP request.
    """

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        host: str = DEFAULT_HOST,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        max_retries: int = 3,
        timeout: float = 10.0,
        app_type: AppType = "self_built",
        tickets: AppTicketStore | None = None,
    ) -> None:
        self._core = OpenAPICore(
            app_id, app_secret, clock=clock, max_retries=max_retries, app_type=app_type, tickets=tickets
        )
        self._http = httpx.Client(base_url=host.rstrip("/"), transport=transport, timeout=timeout)
        self._token_lock = threading.Lock()

    def _drive(self, flow: Generator[Step, Any, T]) -> T:
        reply: Any = None
        while True:
            try:
                step = flow.send(reply)
            except StopIteration as stop:
                return stop.value
            if isinstance(step, HTTPRequest):
                reply = self._send(step)
            elif isinstance(step, Sleep):
                time.sleep(step.seconds)  # honouring x-ogw-ratelimit-reset (capped in core)
                reply = None
            elif isinstance(step, NeedToken):
                reply = self._token(step.stale, step.tenant_key)

    def _send(self, request: HTTPRequest) -> HTTPResponse:
        built = self._http.build_request(request.method, request.path, **http_arguments(request))
        if request.save_to is None:
            response = self._http.send(built)
            return HTTPResponse(response.status_code, response.headers, response.content)
        response = self._http.send(built, stream=True)
        try:
            if not saving(response.status_code, response.headers):
                return HTTPResponse(response.status_code, response.headers, response.read())
            with open(request.save_to, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
            return HTTPResponse(response.status_code, response.headers, b"", request.save_to)
        finally:
            response.close()

    def _download(self, request: HTTPRequest) -> Resource:
        return self._drive(self._core.download_flow(request, self._tenant_key))

    def _pages(self, request: HTTPRequest, page_size: int, items: str) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = dataclasses.replace(request, params=page_params(request.params, token, page_size))
            found, token = next_page(self._call(page), items)
            yield from found
            if token is None:
                return

    def _token(self, stale: str | None, tenant_key: str | None) -> str:
        with self._token_lock:  # one fetch for N concurrent callers
            return self._drive(self._core.token_flow(stale, tenant_key))

    def _call(self, request: HTTPRequest) -> OpenAPIResponse:
        return self._drive(self._core.call_flow(request, self._tenant_key))

    def tenant_access_token(self) -> str:
        """The current tenant_access_token (fetched on first use, cached, refreshed before expiry)."""
        return self._token(None, self._tenant_key)

    def app_access_token(self) -> str:
        """The current app_access_token (a store app's is made from its latest ``app_ticket``)."""
        with self._token_lock:
            return self._drive(self._core.app_token_flow())

    def resend_app_ticket(self) -> OpenAPIResponse:
        """Ask Feishu to push a fresh ``app_ticket`` event now (store apps; the bot stores it)."""
        return self._drive(self._core.resend_ticket_flow())

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> OpenAPIClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
