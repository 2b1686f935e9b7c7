"""The public OpenAPI methods, written once for both clients.

Each method builds an :class:`~wslarkbot.openapi.core.HTTPRequest` with :class:`OpenAPICore` and hands it to
``_call``, which the sync client implements as a blocking call and the asyncio client as a coroutine. So in
:class:`AsyncOpenAPIClient` every method below returns an awaitable of what the docstring says.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from ..exceptions import ConfigurationError
from . import calls, cardkit
from .calls import FileSource
from .core import HTTPRequest, OpenAPICore

__all__ = ["BaseOpenAPIClient"]

R = TypeVar("R")  # OpenAPIResponse, or Awaitable[OpenAPIResponse]
S = TypeVar("S")  # str, or Awaitable[str]
D = TypeVar("D")  # Resource, or Awaitable[Resource]
P = TypeVar("P")  # Iterator[dict], or AsyncIterator[dict]
C = TypeVar("C", bound="BaseOpenAPIClient[Any, Any, Any, Any]")


class BaseOpenAPIClient(ABC, Generic[R, S, D, P]):
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
    #: the tenant this client calls as (store apps; :meth:`for_tenant`), None for a self-built app
    _tenant_key: str | None = None

    @abstractmethod
    def _call(self, request: HTTPRequest) -> R: ...

    @abstractmethod
    def _download(self, request: HTTPRequest) -> D: ...

    @abstractmethod
    def _pages(self, request: HTTPRequest, page_size: int, items: str) -> P: ...

    @abstractmethod
    def tenant_access_token(self) -> S:
        """The current tenant_access_token (fetched on first use, cached, refreshed before expiry)."""

    @property
    def app_type(self) -> str:
        """``"self_built"`` or ``"store"``."""
        return self._core.app_type

    def has_app_ticket(self) -> bool:
        """Whether a store app's ``app_ticket`` has arrived (its tokens can be made)."""
        return self._core.tickets.get(self._core.app_id) is not None

    @property
    def tenant_key(self) -> str | None:
        """The tenant this client calls as (:meth:`for_tenant`), or None."""
        return self._tenant_key

    def for_tenant(self: C, tenant_key: str) -> C:
        """This client calling as tenant ``tenant_key`` (a store app installed by many tenants; an
        event's ``tenant_key`` says whose it is). It shares this client's connections, token caches and
        lock: close the original, not the view."""
        if not tenant_key:
            raise ConfigurationError("tenant_key must be a non-empty string")
        view = copy.copy(self)
        view._tenant_key = tenant_key
        return view

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, FileSource] | None = None,
    ) -> R:
        """Call any endpoint with the app's token: ``request("GET", "/open-apis/im/v1/chats")``.

        Args:
            files: ``{"field": bytes | path | binary file}``: sent as ``multipart/form-data`` with ``data``
                as its other fields (instead of ``json``).
        """
        request = self._core.generic(method, path, json=json, params=params)
        if files is not None:
            parts = {k: calls.file_part(v, limit=calls.MAX_FILE_BYTES) for k, v in files.items()}
            request = dataclasses.replace(request, json=None, data=data, files=parts)
        return self._call(request)

    def request_raw(self, method: str, path: str, *, params: Mapping[str, str] | None = None) -> D:
        """Call an endpoint that answers with a file: a :class:`~.core.Resource` (bytes, type, file name);
        a JSON answer (an error) raises :class:`FeishuAPIError` as usual."""
        request = self._core.generic(method, path, params=params)
        return self._download(HTTPRequest(request.method, request.path, params=request.params, raw=True))

    def paginate(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        page_size: int = 50,
        items: str = "items",
    ) -> P:
        """Every item of a paginated list (``page_token`` / ``has_more`` followed for you).

        ``for member in api.paginate("GET", f"/open-apis/im/v1/chats/{chat_id}/members")`` (sync), or
        ``async for`` with the asyncio client. Pages are fetched as you iterate.
        """
        return self._pages(self._core.generic(method, path, params=params), page_size, items)

    # -- helpers (calls.py; docs/openapi.md) ---------------------------------------------------------

    def upload_image(self, image: FileSource, image_type: str = "message") -> R:
        """Upload an image (bytes, a path or a binary file; <= 10 MB): ``data["image_key"]`` for an
        ``image`` message (``messages.Image(key)``) or a card's image element."""
        return self._call(calls.upload_image(image, image_type))

    def upload_file(
        self,
        file: FileSource,
        file_type: str = "stream",
        file_name: str | None = None,
        duration: int | None = None,
    ) -> R:
        """Upload a file (<= 30 MB, not empty): ``data["file_key"]`` for a ``file``/``audio``/``media``
        message. ``file_type``: ``opus``, ``mp4``, ``pdf``, ``doc``, ``xls``, ``ppt`` or ``stream``."""
        return self._call(calls.upload_file(file, file_type, file_name, duration))

    def download_resource(
        self,
        message_id: str,
        file_key: str,
        type: str = "image",
        path: str | os.PathLike[str] | None = None,
    ) -> D:
        """Download an image or file a message carries (its ``image_key``/``file_key``): a
        :class:`~.core.Resource`; with ``path`` the body is streamed to that file (``.path``)."""
        return self._download(calls.download_resource(message_id, file_key, type, path))

    def get_message(self, message_id: str) -> R:
        """A message's content and metadata: ``data["items"][0]``."""
        return self._call(calls.get_message(message_id))

    def recall(self, message_id: str) -> R:
        """Recall (delete) a message the app sent."""
        return self._call(calls.recall(message_id))

    def forward(self, message_id: str, receive_id: str, receive_id_type: str = "open_id") -> R:
        """Forward a message to a user or chat: the new message in ``data``."""
        return self._call(calls.forward(message_id, receive_id, receive_id_type))

    def add_reaction(self, message_id: str, emoji_type: str) -> R:
        """React to a message (``"THUMBSUP"``, ``"SMILE"``...): ``data["reaction_id"]``."""
        return self._call(calls.add_reaction(message_id, emoji_type))

    def remove_reaction(self, message_id: str, reaction_id: str) -> R:
        """Remove one of the app's reactions."""
        return self._call(calls.remove_reaction(message_id, reaction_id))

    def list_reactions(self, message_id: str, emoji_type: str | None = None, page_size: int = 50) -> P:
        """Every reaction on a message (optionally one emoji only), page by page."""
        return self._pages(calls.list_reactions(message_id, emoji_type), page_size, "items")

    def chat_info(self, chat_id: str, user_id_type: str = "open_id") -> R:
        """A chat's name, description, owner, mode...: ``data``."""
        return self._call(calls.chat_info(chat_id, user_id_type))

    def chat_members(self, chat_id: str, member_id_type: str = "open_id", page_size: int = 50) -> P:
        """Every member of a chat (``member_id``, ``name``, ``tenant_key``), page by page."""
        return self._pages(calls.chat_members(chat_id, member_id_type), page_size, "items")

    def user_info(self, user_id: str, user_id_type: str = "open_id") -> R:
        """A user's profile: ``data["user"]`` (name, avatar, ... as the app's contact scope allows)."""
        return self._call(calls.user_info(user_id, user_id_type))

    # -- CardKit (cardkit.py): card entities and streaming ------------------------------------------

    def create_card(self, card: Any) -> R:
        """Create a card entity from a JSON 2.0 card: ``data["card_id"]``; show it with
        ``send(receive_id, cardkit.card_content(card_id), "interactive")``."""
        return self._call(cardkit.create_card(card))

    def update_card_entity(self, card_id: str, card: Any, sequence: int) -> R:
        """Replace a card entity's whole card (``sequence`` grows with each update of the card)."""
        return self._call(cardkit.update_card(card_id, card, sequence))

    def stream_card_text(self, card_id: str, element_id: str, content: str, sequence: int) -> R:
        """Set a card entity element's text (typed out in streaming mode)."""
        return self._call(cardkit.stream_text(card_id, element_id, content, sequence))

    def update_card_settings(self, card_id: str, settings: Mapping[str, Any], sequence: int) -> R:
        """Change a card entity's config, e.g. ``{"config": {"streaming_mode": False}}``."""
        return self._call(cardkit.update_settings(card_id, settings, sequence))

    def urgent(
        self, message_id: str, user_ids: Iterable[str], kind: str = "app", user_id_type: str = "open_id"
    ) -> R:
        """Buzz users about a message the app sent: ``kind`` ``app``, ``sms`` or ``phone``;
        ``data["invalid_user_id_list"]`` lists those it could not reach."""
        return self._call(calls.urgent(message_id, user_ids, kind, user_id_type))

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
