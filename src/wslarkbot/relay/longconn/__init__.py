"""Feishu's official long-connection protocol, served by the relay (docs/long-connection.md).

Unmodified ``lark_oapi.ws.Client(app_id, app_secret, event_handler=..., domain="https://relay.example.com")``
bots connect here; Feishu's webhooks for their apps are verified by the relay and pushed to them as plaintext
``pbbp2.Frame`` events (/work/shared/feishu/long-connection.md §1).

Modules: ``frame`` (protobuf codec, no I/O), ``config`` (per-app config file), ``tickets`` (one-time ws
tickets), ``registry`` (the connected clients and delivery to them, no sockets), ``webhook``
(verify/decrypt and answer mapping), ``server`` (aiohttp routes).
"""

from __future__ import annotations

from .config import GatewayApp, GatewayConfig, hash_secret, load_gateway_config
from .frame import Frame, decode_frame, encode_frame
from .registry import ClientRegistry
from .server import GATEWAY_KEY, Gateway

__all__ = [
    "GATEWAY_KEY",
    "Frame",
    "Gateway",
    "GatewayApp",
    "GatewayConfig",
    "ClientRegistry",
    "decode_frame",
    "encode_frame",
    "hash_secret",
    "load_gateway_config",
]
