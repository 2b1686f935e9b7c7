"""wslarkbot: Feishu/Lark bots without a public URL.

``from wslarkbot import *`` gives the bot SDK: :class:`Bot`, the WebSocket :class:`Client` (and
:class:`AsyncClient`), the OpenAPI clients, message cards and contents, typed events and the exceptions.
The relay (``wslarkbot.relay``) and the simulator (``wslarkbot.sim``) are imported from their packages.

Example::

    from wslarkbot import *

    class EchoBot(Bot):
        def on_message(self, data, raw_message, **kwargs):
            ...

    Client(EchoBot("cli_xxx", app_secret="...", encrypt_key="..."), server="relay.example.com").start()
"""

from __future__ import annotations

# The original package's star import gave its users `json` and `logging`, and seed-style bots call
# `json.loads(...)` right after `from wslarkbot import *`: both stay in __all__ so that code runs unchanged.
import json
import logging

from .bot import Bot, DispatchResult
from .cards import (
    CardActionResponse,
    FeishuMessageAction,
    FeishuMessageButton,
    FeishuMessageCard,
    FeishuMessageCardConfig,
    FeishuMessageCardHeader,
    FeishuMessageColumn,
    FeishuMessageColumnSet,
    FeishuMessageConfirm,
    FeishuMessageDatePicker,
    FeishuMessageDiv,
    FeishuMessageHr,
    FeishuMessageImage,
    FeishuMessageLarkMD,
    FeishuMessageMarkdown,
    FeishuMessageMDText,
    FeishuMessageNote,
    FeishuMessageOption,
    FeishuMessageOverflow,
    FeishuMessagePlainText,
    FeishuMessageSelect,
    FeishuMessageSelectPerson,
    TemplateCard,
    Toast,
)
from .client import (
    WS_LARK_PROXY_PROTOCOL,
    WS_LARK_PROXY_SERVER,
    AsyncClient,
    Client,
    ClientStatus,
    ReconnectGaveUp,
    RelayAuthError,
)
from .content import (
    Mention,
    ReceivedCard,
    ReceivedFile,
    ReceivedImage,
    ReceivedOther,
    ReceivedPost,
    ReceivedText,
)
from .dedup import Deduplicator, MemoryDeduplicator, SqliteDeduplicator
from .events import (
    CallbackV2,
    CardAction,
    EventV1,
    EventV2,
    FeishuEvent,
    FeishuRequest,
    LegacyCardAction,
    MessageEvent,
    UrlVerification,
    parse_payload,
)
from .exceptions import (
    CardValidationError,
    ConfigurationError,
    DecryptError,
    FeishuAPIError,
    MalformedRequestError,
    ProtocolError,
    RateLimitedError,
    RequestRejected,
    SignatureError,
    TokenMismatchError,
    WslarkbotError,
)
from .messages import (
    AudioContent,
    FeishuAudioMessage,
    FeishuFileMessage,
    FeishuImageMessage,
    FeishuMediaMessage,
    FeishuStickerMessage,
    FeishuTextMessage,
    FileContent,
    ImageContent,
    MediaContent,
    PostAt,
    PostCodeBlock,
    PostContent,
    PostEmotion,
    PostHr,
    PostImage,
    PostLink,
    PostMarkdown,
    PostMedia,
    PostText,
    ShareChatContent,
    ShareUserContent,
    StickerContent,
    TextContent,
    mention,
    mention_all,
)
from .openapi import AsyncOpenAPIClient, OpenAPIClient, OpenAPIResponse
from .streaming import AsyncStreamingCard, StreamingCard

__version__ = "1.0.0.dev0"

__all__ = [
    # what the original star import gave seed-style code (see the imports above)
    "json",
    "logging",
    # bot and client
    "Bot",
    "DispatchResult",
    "Client",
    "AsyncClient",
    "ClientStatus",
    "WS_LARK_PROXY_SERVER",
    "WS_LARK_PROXY_PROTOCOL",
    # OpenAPI
    "OpenAPIClient",
    "AsyncOpenAPIClient",
    "OpenAPIResponse",
    # message cards and callback responses
    "FeishuMessageCard",
    "FeishuMessageCardHeader",
    "FeishuMessageCardConfig",
    "FeishuMessageDiv",
    "FeishuMessageHr",
    "FeishuMessageNote",
    "FeishuMessagePlainText",
    "FeishuMessageMDText",
    "FeishuMessageLarkMD",
    "FeishuMessageMarkdown",
    "FeishuMessageImage",
    "FeishuMessageButton",
    "FeishuMessageAction",
    "FeishuMessageSelect",
    "FeishuMessageOption",
    "FeishuMessageOverflow",
    "FeishuMessageSelectPerson",
    "FeishuMessageDatePicker",
    "FeishuMessageConfirm",
    "FeishuMessageColumnSet",
    "FeishuMessageColumn",
    "CardActionResponse",
    "Toast",
    "TemplateCard",
    # other message contents
    "TextContent",
    "ImageContent",
    "FileContent",
    "AudioContent",
    "MediaContent",
    "StickerContent",
    "ShareChatContent",
    "ShareUserContent",
    "PostContent",
    "PostText",
    "PostLink",
    "PostAt",
    "PostImage",
    "PostMedia",
    "PostEmotion",
    "PostHr",
    "PostCodeBlock",
    "PostMarkdown",
    "FeishuTextMessage",
    "FeishuImageMessage",
    "FeishuFileMessage",
    "FeishuAudioMessage",
    "FeishuMediaMessage",
    "FeishuStickerMessage",
    "mention",
    "mention_all",
    # events
    "FeishuEvent",
    "FeishuRequest",
    "EventV2",
    "EventV1",
    "MessageEvent",
    "CallbackV2",
    "CardAction",
    "LegacyCardAction",
    "UrlVerification",
    "parse_payload",
    # received message contents and mentions
    "Mention",
    "ReceivedText",
    "ReceivedPost",
    "ReceivedImage",
    "ReceivedFile",
    "ReceivedCard",
    "ReceivedOther",
    # chat-bot helpers
    "StreamingCard",
    "AsyncStreamingCard",
    "Deduplicator",
    "MemoryDeduplicator",
    "SqliteDeduplicator",
    # exceptions
    "WslarkbotError",
    "RequestRejected",
    "SignatureError",
    "DecryptError",
    "TokenMismatchError",
    "MalformedRequestError",
    "FeishuAPIError",
    "RateLimitedError",
    "CardValidationError",
    "ProtocolError",
    "ConfigurationError",
    "RelayAuthError",
    "ReconnectGaveUp",
]
