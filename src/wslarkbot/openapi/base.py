"""The public OpenAPI methods, written once for both clients.

Each method builds an :class:`~wslarkbot.openapi.core.HTTPRequest` with :class:`OpenAPICore` and hands it to
``_call``, which the sync client implements as a blocking call and the asyncio client as a coroutine. So in
:class:`AsyncOpenAPIClient` every method below returns an awaitable of what the docstring says.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from .core import HTTPRequest, OpenAPICore

__all__ = ["BaseOpenAPIClient"]

R = TypeVar("R")  # OpenAPIResponse, or Awaitable[OpenAPIResponse]
S = TypeVar("S")  # str, or Awaitable[str]


class BaseOpenAPIClient(ABC, Generic[R, S]):
    """Feishu OpenAPI methods shared by :class:`OpenAPIClient` and :class:`AsyncOpenAPIClient`.

    Every method returns an :class:`~wslarkbot.openapi.core.OpenAPIResponse`: the response's ``data`` as a
    dict, which also offers ``.json()`` (the whole body) and ``.status_code``.

    Raises (all methods):
        FeishuAPIError: Feishu answered ``code != 0`` (``.code``, ``.msg``, ``.log_id``, ``.http_status``),
            or the body was not JSON (code ``-1``).
        RateLimitedError: still rate limited after ``max_retries`` waits.
        CardValidationError: content over Feishu's size limit (text 150 KB, card/post 30 KB) or a bad card.
        ConfigurationError: content of an unsupported type, a bad ``receive_id_type`` or ``uuid``.
        httpx.HTTPError: network failures (connect errors, timeouts) propagate unchanged.
    """

    _core: OpenAPICore

    @abstractmethod
    def _call(self, request: HTTPRequest) -> R: ...

    @abstractmethod
    def tenant_access_token(self) -> S:
        """The current tenant_access_token (fetched on first use, cached, refreshed before expiry)."""

    def request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None
    ) -> R:
        """Call any endpoint with the app's token: ``request("GET", "/open-apis/im/v1/chats")``."""
        return self._call(self._core.generic(method, path, json=json, params=params))

    def send(
        self,
        receive_id: str,
        content: Any,
        msg_type: str | None = None,
        receive_id_type: str = "open_id",
        uuid: str | None = None,
    ) -> R:
        """Send a message: ``POST /open-apis/im/v1/messages?receive_id_type=...``.

        Args:
            content: a dict, a JSON string, or an object with ``to_dict()`` (cards, message builders);
                it is sent as a JSON string.
            msg_type: ``"text"``, ``"post"``, ``"interactive"``...; ``None`` (the default) takes
                ``content.msg_type`` (cards and :mod:`wslarkbot.messages` builders carry one),
                else ``"text"``.
            receive_id_type: ``open_id`` | ``user_id`` | ``union_id`` | ``email`` | ``chat_id``.
            uuid: idempotency key (<= 50 characters, deduplicated by Feishu for 1 h).
        """
        return self._call(self._core.send(receive_id, content, msg_type, receive_id_type, uuid))

    def reply(
        self,
        message_id: str,
        content: Any,
        msg_type: str | None = None,
        reply_in_thread: bool = False,
        uuid: str | None = None,
    ) -> R:
        """Reply to a message: ``POST /open-apis/im/v1/messages/:message_id/reply``."""
        return self._call(self._core.reply(message_id, content, msg_type, reply_in_thread, uuid))

    def update(self, message_id: str, content: Any) -> R:
        """Replace a card the app sent: ``PATCH /open-apis/im/v1/messages/:message_id``."""
        return self._call(self._core.update(message_id, content))

    def send_text(
        self, receive_id: str, text: str, receive_id_type: str = "open_id", uuid: str | None = None
    ) -> R:
        """Send ``{"text": text}`` as a text message."""
        return self.send(receive_id, {"text": text}, "text", receive_id_type, uuid)

    def reply_text(
        self, message_id: str, text: str, reply_in_thread: bool = False, uuid: str | None = None
    ) -> R:
        """Reply with a text message."""
        return self.reply(message_id, {"text": text}, "text", reply_in_thread, uuid)

    def send_card(
        self, receive_id: str, card: Any, receive_id_type: str = "open_id", uuid: str | None = None
    ) -> R:
        """Send an ``interactive`` message (a card: dict, JSON string or ``FeishuMessageCard``)."""
        return self.send(receive_id, card, "interactive", receive_id_type, uuid)

    def reply_card(
        self, message_id: str, card: Any, reply_in_thread: bool = False, uuid: str | None = None
    ) -> R:
        """Reply with a card."""
        return self.reply(message_id, card, "interactive", reply_in_thread, uuid)

    def update_card(self, message_id: str, card: Any) -> R:
        """Replace a card the app sent (same as :meth:`update`)."""
        return self.update(message_id, card)

    def delay_update_card(self, token: str, card: Any) -> R:
        """Update a card after a callback: ``POST /open-apis/interactive/v1/card/update``.

        ``token`` is the callback's ``c-...`` token (valid 30 min, 2 uses). Call it only after the
        callback has been answered (protocol.md §6c).
        """
        return self._call(self._core.delay_update_card(token, card))
