"""Where the client connects: server, protocol, channels, URLs and credentials. No I/O.

Module constants (the original client exported them; other projects import them):

* :data:`WS_LARK_PROXY_SERVER` -- ``$WSLARKBOT_SERVER`` (or the original's ``$WS_LARK_PROXY_SERVER``), else
  ``""``. An empty server makes :class:`~wslarkbot.client.Client` raise ``ConfigurationError``.
* :data:`WS_LARK_PROXY_PROTOCOL` -- ``$WSLARKBOT_PROTOCOL`` (or ``$WS_LARK_PROXY_PROTOCOL``), else
  ``"https"`` (the original's default). ``Client(protocol=None)`` does not use it blindly: without the
  environment variable it picks ``http`` for ``localhost``/``127.x``/``::1`` servers and ``https`` otherwise.

Both constants are read once, at import time; :func:`resolve_endpoint` reads the environment again at
each call, so setting the variables before constructing a client is enough.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from ..exceptions import ConfigurationError
from ..wire import CHANNEL_RE, PROTOCOL_VERSION

__all__ = [
    "ENV_PROTOCOL",
    "ENV_SERVER",
    "WS_LARK_PROXY_PROTOCOL",
    "WS_LARK_PROXY_SERVER",
    "Endpoint",
    "org_channel",
    "resolve_endpoint",
]

ENV_SERVER = "WSLARKBOT_SERVER"
ENV_PROTOCOL = "WSLARKBOT_PROTOCOL"
_LEGACY_ENV_SERVER = "WS_LARK_PROXY_SERVER"
_LEGACY_ENV_PROTOCOL = "WS_LARK_PROXY_PROTOCOL"

#: The relay, ``host[:port]`` (no scheme), from the environment; ``""`` when unset.
WS_LARK_PROXY_SERVER: str = os.environ.get(ENV_SERVER) or os.environ.get(_LEGACY_ENV_SERVER) or ""
#: ``https`` (-> ``wss``) or ``http`` (-> ``ws``), from the environment; ``"https"`` when unset.
WS_LARK_PROXY_PROTOCOL: str = (
    os.environ.get(ENV_PROTOCOL) or os.environ.get(_LEGACY_ENV_PROTOCOL) or "https"
).lower()

_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _env(environ: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = environ.get(name)
        if value:
            return value
    return ""


def _is_local(server: str) -> bool:
    host = server.split("/", 1)[0]
    if host.startswith("["):  # [::1]:8888
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.lower()
    return host in ("localhost", "::1") or host.startswith("127.") or host.endswith(".localhost")


def org_channel(org_name: str) -> str:
    """The relay channel of an organisation: ``org_name`` itself when it starts with ``org_``, else
    ``org_`` + ``org_name`` (the relay treats only ``org_*`` channels as organisations)."""
    return org_name if org_name.startswith("org_") else "org_" + org_name


@dataclass(frozen=True)
class Endpoint:
    """A resolved relay address plus the credentials of the subscription.

    Attributes:
        server: ``host[:port]`` (optionally followed by a path prefix), no scheme, no trailing ``/``.
        protocol: ``"http"`` or ``"https"``; the WebSocket scheme follows (``ws``/``wss``).
        org_name: the organisation channel (``org_...``) or ``""`` in app mode.
        org_passwd: the organisation's password (never shown in ``repr``).
    """

    server: str
    protocol: str
    org_name: str = ""
    org_passwd: str = field(default="", repr=False)

    @property
    def ws_scheme(self) -> str:
        return "wss" if self.protocol == "https" else "ws"

    @property
    def org_mode(self) -> bool:
        return bool(self.org_name)

    def channels(self, app_ids: Sequence[str]) -> list[str]:
        """The channels to subscribe to: the organisation, or the app ids (order kept, no duplicates)."""
        if self.org_mode:
            return [self.org_name]
        return list(dict.fromkeys(app_ids))

    def sub_url(self, app_ids: Sequence[str], *, group: str | None = None, since: str = "") -> str:
        """``{ws}://{server}/sub/{ch1,ch2,...}?proto=2`` (nchan's ``,`` channel delimiter), with
        ``&group=<group>`` and ``&since=<ch>:<id>,...`` when given (docs/delivery.md).

        Raises:
            ConfigurationError: no channel, or a channel name the relay would refuse.
        """
        channels = self.channels(app_ids)
        if not channels:
            raise ConfigurationError("no bot to subscribe for: add at least one bot")
        for ch in channels:
            if not CHANNEL_RE.match(ch):
                raise ConfigurationError(f"invalid channel name {ch!r}: letters, digits, '_', '.', '-'")
        query = f"proto={PROTOCOL_VERSION}"
        if group:
            query += f"&group={group}"
        if since:
            query += f"&since={since}"
        return f"{self.ws_scheme}://{self.server}/sub/{','.join(channels)}?{query}"

    def reply_url(self, request_id: str) -> str:
        """Where an original-protocol client POSTs a reply: ``{protocol}://{server}/sub/{request_id}``."""
        return f"{self.protocol}://{self.server}/sub/{quote(request_id, safe='')}"

    def hook_url(self, app_id: str) -> str:
        """The URL to paste into the Feishu console for ``app_id``: ``/hook/{app_id}``, or
        ``/{org_name}/{app_id}`` in org mode."""
        prefix = self.org_name if self.org_mode else "hook"
        return f"{self.protocol}://{self.server}/{prefix}/{app_id}"

    def auth_headers(self) -> dict[str, str]:
        """``Authorization: Basic`` for org mode (user = the org channel), else nothing."""
        if not self.org_mode:
            return {}
        token = base64.b64encode(f"{self.org_name}:{self.org_passwd}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}


def resolve_endpoint(
    server: str | None,
    protocol: str | None,
    *,
    org_name: str = "",
    org_passwd: str = "",
    environ: Mapping[str, str] | None = None,
) -> Endpoint:
    """Apply the defaults described in the module docstring.

    ``server`` may carry a scheme (``https://relay.example.com``); it then sets the protocol when
    ``protocol`` is not given.

    Raises:
        ConfigurationError: no server anywhere, or a protocol other than http/https.
    """
    env = os.environ if environ is None else environ
    raw = (server or _env(env, ENV_SERVER, _LEGACY_ENV_SERVER)).strip()
    if not raw:
        raise ConfigurationError(
            f"no relay server: pass server='host[:port]' or set ${ENV_SERVER} (e.g. relay.example.com)"
        )
    scheme_from_server = ""
    if "://" in raw:
        scheme, raw = raw.split("://", 1)
        scheme_from_server = _SCHEMES.get(scheme.lower(), "")
        if not scheme_from_server:
            raise ConfigurationError(f"unsupported scheme {scheme!r} in server; use host[:port]")
    raw = raw.rstrip("/")
    if not raw:
        raise ConfigurationError("server has no host")
    proto = (protocol or scheme_from_server or _env(env, ENV_PROTOCOL, _LEGACY_ENV_PROTOCOL)).lower()
    if not proto:
        proto = "http" if _is_local(raw) else "https"
    proto = _SCHEMES.get(proto, "")
    if not proto:
        raise ConfigurationError(f"protocol must be 'http' or 'https', got {protocol!r}")
    org = org_channel(org_name) if org_name else ""
    if org_passwd and not org:
        raise ConfigurationError("org_passwd given without org_name")
    return Endpoint(server=raw, protocol=proto, org_name=org, org_passwd=org_passwd)
