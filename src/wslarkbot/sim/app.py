"""One simulated Feishu app: the credentials the developer console shows.

``SimApp`` is plain data. Secrets are kept out of ``repr()`` so that a failing assertion or a log line
never prints them.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field, replace

__all__ = ["SimApp", "new_id"]

_ALNUM = string.ascii_letters + string.digits


def _alnum(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def new_id(prefix: str, n_hex: int = 32) -> str:
    """A fresh Feishu-style id: ``prefix`` + ``n_hex`` lowercase hex digits (``new_id("om_")``).

    Feishu ids: ``ou_`` open_id, ``on_`` union_id, ``oc_`` chat_id, ``om_`` message_id, ``cli_`` app_id.
    """
    return prefix + secrets.token_hex((n_hex + 1) // 2)[:n_hex]


@dataclass(frozen=True)
class SimApp:
    """The credentials of one Feishu app (console > 凭证与基础信息, 事件与回调 > 加密策略).

    Args:
        app_id: ``cli_`` followed by 16 hex digits.
        app_secret: the App Secret (32 characters in the console).
        verification_token: the Verification Token put in ``header.token`` / ``token`` of every payload.
        encrypt_key: the Encrypt Key, or ``None`` when encryption is off (then bodies are plaintext and,
            by default, unsigned; see :class:`~wslarkbot.sim.feishu.FeishuSimulator`).
        tenant_key: the tenant the app is installed in.
        bot_open_id: the bot's own ``open_id`` (what an @mention of the bot carries).
    """

    app_id: str
    app_secret: str = field(repr=False)
    verification_token: str = field(repr=False)
    encrypt_key: str | None = field(default=None, repr=False)
    tenant_key: str = field(default_factory=lambda: new_id("", 16))
    bot_open_id: str = field(default_factory=lambda: new_id("ou_"))
    bot_name: str = "wslarkbot-sim"

    def __post_init__(self) -> None:
        if not self.app_id:
            raise ValueError("app_id must not be empty")
        if not self.verification_token:
            # Feishu always shows one; the official SDK rejects an empty token (protocol.md §3).
            raise ValueError("verification_token must not be empty")

    @classmethod
    def random(cls, *, encrypt: bool = True, **overrides: str | None) -> SimApp:
        """A new app with realistic random credentials.

        Args:
            encrypt: give the app an Encrypt Key (the console's default for new apps is none; tests
                usually want encryption on, since that is the harder path).
            overrides: any field to set explicitly, e.g. ``app_id="cli_a1b2c3d4e5f60718"``.
        """
        values: dict[str, str | None] = {
            "app_id": new_id("cli_", 16),
            "app_secret": _alnum(32),
            "verification_token": _alnum(32),
            "encrypt_key": _alnum(32) if encrypt else None,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def encrypted(self) -> bool:
        """True when an Encrypt Key is configured (bodies are ``{"encrypt": ...}`` and signed)."""
        return bool(self.encrypt_key)

    def without_encrypt_key(self) -> SimApp:
        """The same app with encryption turned off."""
        return replace(self, encrypt_key=None)
