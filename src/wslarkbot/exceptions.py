"""The one exception tree of wslarkbot.

::

    WslarkbotError
    ├── RequestRejected            a webhook request that must not reach a handler
    │   ├── SignatureError         X-Lark-Signature missing or wrong
    │   ├── DecryptError           the ``encrypt`` field cannot be decrypted
    │   ├── TokenMismatchError     the Verification Token in the body is wrong
    │   └── MalformedRequestError  not a Feishu payload (bad JSON, missing fields)
    ├── FeishuAPIError             the OpenAPI answered ``code != 0`` (carries code, msg, log_id)
    │   └── RateLimitedError       HTTP 429 / 99991400 still failing after bounded retries
    ├── CardValidationError        a message card or message body breaks Feishu's documented shape
    ├── ProtocolError              a relay/client wire message that does not parse
    └── ConfigurationError         misuse: missing credentials, bad option values
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CardValidationError",
    "ConfigurationError",
    "DecryptError",
    "FeishuAPIError",
    "MalformedRequestError",
    "ProtocolError",
    "RateLimitedError",
    "RequestRejected",
    "SignatureError",
    "TokenMismatchError",
    "WslarkbotError",
    "rejection_hint",
]


class WslarkbotError(Exception):
    """Root of every exception this package raises on purpose."""


class RequestRejected(WslarkbotError):
    """A webhook request failed verification; no handler was called.

    ``hint`` says what an operator should check; :func:`rejection_hint` puts it in a log line.
    """

    hint = "the request failed verification"


class SignatureError(RequestRejected):
    """The request's signature is missing or does not match (protocol.md §3)."""

    hint = "the X-Lark-Signature does not match: check the Encrypt Key (encrypt_key)"


class DecryptError(RequestRejected):
    """The ``encrypt`` field could not be decrypted with the configured Encrypt Key (protocol.md §2)."""

    hint = "the body does not decrypt: check the Encrypt Key (encrypt_key)"


class TokenMismatchError(RequestRejected):
    """The Verification Token carried by the payload is not the configured one."""

    hint = "the token does not match: check the Verification Token (verification_token)"


class MalformedRequestError(RequestRejected):
    """The request is not a Feishu event, callback or challenge."""

    hint = "not a Feishu request (no event, callback or challenge)"


def rejection_hint(exc: RequestRejected) -> str:
    """``<the check that failed>: <what to look at>``, for the log of whoever holds the keys (never the
    payload or a secret)."""
    return f"{type(exc).__name__}: {exc.hint}"


class FeishuAPIError(WslarkbotError):
    """Feishu's OpenAPI reported a failure.

    Attributes:
        code: Feishu's business code (``0`` never appears here).
        msg: Feishu's message.
        log_id: the ``X-Tt-Logid`` header or ``error.log_id``, for Feishu support.
        http_status: the HTTP status of the response.
        body: the decoded response body, when it was JSON.
    """

    def __init__(
        self,
        code: int,
        msg: str,
        *,
        log_id: str | None = None,
        http_status: int | None = None,
        body: Any = None,
    ) -> None:
        self.code = code
        self.msg = msg
        self.log_id = log_id
        self.http_status = http_status
        self.body = body
        detail = f"Feishu API error {code}: {msg}"
        if log_id:
            detail += f" (log_id {log_id})"
        super().__init__(detail)


class RateLimitedError(FeishuAPIError):
    """Still rate limited (HTTP 429 or code 99991400) after the bounded retries."""

    def __init__(self, code: int, msg: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(code, msg, **kwargs)
        self.retry_after = retry_after


class CardValidationError(WslarkbotError, ValueError):
    """A card element or message body violates Feishu's documented shape or limits."""


class ProtocolError(WslarkbotError, ValueError):
    """A message between relay and client is not valid JSON of the expected shape."""


class ConfigurationError(WslarkbotError, ValueError):
    """The library was configured or called wrongly (missing credentials, bad option)."""
