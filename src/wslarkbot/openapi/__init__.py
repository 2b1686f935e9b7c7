"""Feishu OpenAPI clients: one core (:mod:`.core`, :mod:`.token`), a blocking and an asyncio front.

::

    from wslarkbot.openapi import OpenAPIClient, AsyncOpenAPIClient
"""

from __future__ import annotations

from .aio import AsyncOpenAPIClient
from .base import BaseOpenAPIClient
from .core import DEFAULT_HOST, LARK_HOST, OpenAPIResponse
from .sync import OpenAPIClient

__all__ = [
    "DEFAULT_HOST",
    "LARK_HOST",
    "AsyncOpenAPIClient",
    "BaseOpenAPIClient",
    "OpenAPIClient",
    "OpenAPIResponse",
]
