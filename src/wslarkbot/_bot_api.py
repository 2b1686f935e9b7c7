"""The OpenAPI side of :class:`~wslarkbot.bot.Bot` (private): ``bot.api``, ``bot.async_api`` and the original
project's convenience methods (``send``, ``reply_text``, ``update_card``...), delegating to ``bot.api``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .exceptions import ConfigurationError
from .tenancy import current_tenant

if TYPE_CHECKING:
    from .openapi import AsyncOpenAPIClient, OpenAPIClient
    from .openapi.tickets import AppTicketStore
    from .openapi.token import AppType

__all__ = ["BotAPIMixin"]

C = TypeVar("C", "OpenAPIClient", "AsyncOpenAPIClient")


class BotAPIMixin:
    """OpenAPI clients created on first use from the bot's credentials and host."""

    app_id: str
    app_secret: str | None
    host: str
    _http_transport: Any
    _async_http_transport: Any
    _clock: Callable[[], float]
    _api: OpenAPIClient | None
    _async_api: AsyncOpenAPIClient | None
    _api_lock: threading.Lock
    app_type: AppType
    tickets: AppTicketStore

    def _require_secret(self) -> str:
        if not self.app_secret:
            raise ConfigurationError("app_secret is required for OpenAPI calls")
        return self.app_secret

    def _client_options(self) -> dict[str, Any]:
        return {"host": self.host, "clock": self._clock, "app_type": self.app_type, "tickets": self.tickets}

    def new_async_api(self) -> AsyncOpenAPIClient:
        """A fresh asyncio OpenAPI client with the bot's credentials and settings (the caller closes it;
        :attr:`async_api` is the shared one)."""
        from .openapi import AsyncOpenAPIClient

        options = self._client_options()
        return AsyncOpenAPIClient(
            self.app_id, self._require_secret(), transport=self._async_http_transport, **options
        )

    def _as_event_tenant(self, client: C) -> C:
        """A store app's client inside a handler calls as the event's tenant (:mod:`wslarkbot.tenancy`)."""
        tenant = current_tenant() if self.app_type == "store" else None
        return client.for_tenant(tenant) if tenant else client

    @property
    def api(self) -> OpenAPIClient:
        """The sync OpenAPI client, created on first use.

        A store app's, inside a handler, calls as the tenant of the event being handled
        (:mod:`wslarkbot.tenancy`); elsewhere use ``bot.api.for_tenant(tenant_key)``.
        """
        with self._api_lock:
            if self._api is None:
                from .openapi import OpenAPIClient

                options = self._client_options()
                self._api = OpenAPIClient(
                    self.app_id, self._require_secret(), transport=self._http_transport, **options
                )
            api = self._api
        return self._as_event_tenant(api)

    @property
    def async_api(self) -> AsyncOpenAPIClient:
        """The asyncio OpenAPI client, created on first use (a store app's: as :attr:`api`)."""
        with self._api_lock:
            if self._async_api is None:
                self._async_api = self.new_async_api()
            aapi = self._async_api
        return self._as_event_tenant(aapi)

    def lark_client(self) -> Any:
        """A ``lark_oapi.Client`` for the same app (id, secret, host), for everything else on the platform.

        Needs the ``lark`` extra (``pip install 'wslarkbot[lark]'``, the official ``lark-oapi``). A store
        app's client is built with ``app_type(lark.AppType.ISV)``; pass the tenant and ``app_ticket`` in
        each call's ``RequestOption`` as lark-oapi expects.

        Raises:
            ConfigurationError: lark-oapi is not installed, or the bot has no app secret.
        """
        try:
            import lark_oapi as lark
        except ImportError:
            raise ConfigurationError(
                "bot.lark_client() needs lark-oapi: pip install 'wslarkbot[lark]'"
            ) from None
        builder = lark.Client.builder().app_id(self.app_id).app_secret(self._require_secret())
        builder = builder.domain(self.host)
        if self.app_type == "store":
            builder = builder.app_type(lark.AppType.ISV)
        return builder.build()

    # The original convenience methods, delegating to ``self.api``. ``msg_type=None`` means "text", or
    # the ``msg_type`` a card/message builder carries (so ``bot.send(open_id, card)`` works). Extra
    # keyword arguments (``uuid=``, ``reply_in_thread=``) are passed on.

    def send(
        self,
        receive_id: str,
        content: Any,
        msg_type: str | None = None,
        receive_id_type: str = "open_id",
        **kwargs: Any,
    ) -> Any:
        """Send a message (``POST /open-apis/im/v1/messages``); returns the created message."""
        return self.api.send(
            receive_id, content, msg_type=msg_type, receive_id_type=receive_id_type, **kwargs
        )

    def reply(self, message_id: str, content: Any, msg_type: str | None = None, **kwargs: Any) -> Any:
        """Reply to ``message_id``; ``reply_in_thread=True`` replies in a thread."""
        return self.api.reply(message_id, content, msg_type=msg_type, **kwargs)

    def update(self, message_id: str, content: Any) -> Any:
        """Replace a card the app sent (``PATCH /open-apis/im/v1/messages/:message_id``)."""
        return self.api.update(message_id, content)

    def send_text(self, receive_id: str, text: str, receive_id_type: str = "open_id", **kwargs: Any) -> Any:
        return self.api.send_text(receive_id, text, receive_id_type=receive_id_type, **kwargs)

    def reply_text(self, message_id: str, text: str, **kwargs: Any) -> Any:
        return self.api.reply_text(message_id, text, **kwargs)

    def send_card(
        self, receive_id: str, content: Any, receive_id_type: str = "open_id", **kwargs: Any
    ) -> Any:
        return self.api.send_card(receive_id, content, receive_id_type=receive_id_type, **kwargs)

    def reply_card(self, message_id: str, content: Any, **kwargs: Any) -> Any:
        return self.api.reply_card(message_id, content, **kwargs)

    def update_card(self, message_id: str, content: Any) -> Any:
        return self.api.update_card(message_id, content)

    def close(self) -> None:
        """Release the sync HTTP client (the async one needs :meth:`aclose`)."""
        with self._api_lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()

    async def aclose(self) -> None:
        """Release both HTTP clients."""
        with self._api_lock:
            aapi, self._async_api = self._async_api, None
        if aapi is not None:
            await aapi.aclose()
        self.close()
