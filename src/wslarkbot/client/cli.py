"""``wslarkbot run``: an echo bot behind a relay, configured by flags or environment variables.

No interactive prompts (the original ``python -m wslarkbot`` asked for missing values): a missing
required value is an error with exit status 2. Secrets are better given by environment variables than
flags (flags are visible in ``ps``). SIGINT/SIGTERM stop it gracefully (exit status 0).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

__all__ = ["build_echo_bot", "register"]

#: (flag, environment variable, help)
_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--app-id", "WSLARKBOT_APP_ID", "the app's App ID (cli_...); required"),
    ("--app-secret", "WSLARKBOT_APP_SECRET", "the App Secret, for replying through the OpenAPI; required"),
    ("--encrypt-key", "WSLARKBOT_ENCRYPT_KEY", "the Encrypt Key, if encryption is on in the console"),
    (
        "--verification-token",
        "WSLARKBOT_VERIFICATION_TOKEN",
        "the Verification Token, checked in every request; required unless --encrypt-key is set "
        "(then every request is checked by its signature)",
    ),
    ("--server", "WSLARKBOT_SERVER", "the relay, host[:port] without scheme; required"),
    ("--protocol", "WSLARKBOT_PROTOCOL", "https (wss) or http (ws); default: http for localhost, else https"),
    ("--org-name", "WSLARKBOT_ORG_NAME", "organisation channel (org_...) for org mode"),
    ("--org-passwd", "WSLARKBOT_ORG_PASSWD", "the organisation's relay password"),
    (
        "--feishu-host",
        "WSLARKBOT_FEISHU_HOST",
        "OpenAPI host: open.feishu.cn (default) or open.larksuite.com (Lark), or a full URL",
    ),
)

_EPILOG = (
    "environment variables (a flag wins over its variable):\n"
    + "\n".join(f"  {env:<30} {flag}" for flag, env, _help in _OPTIONS)
    + "\n  WSLARKBOT_LOG_LEVEL            --log-level"
)


def register(subparsers: Any) -> None:
    """Add ``run`` to the ``wslarkbot`` command line (imports nothing heavy)."""
    parser = subparsers.add_parser(
        "run",
        help="run an echo bot behind a relay (replies 'echo: <text>' to text messages)",
        description="Run an echo bot connected to a wslarkbot relay: it answers the console's challenge "
        "and replies 'echo: <text>' to every text message. It prints the request URL to paste into the "
        "Feishu console.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, env, help_text in _OPTIONS:
        parser.add_argument(flag, default=None, help=f"{help_text} [${env}]")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
    parser.add_argument("--debug", action="store_true", help="same as --log-level DEBUG")
    parser.set_defaults(func=_run)


def _value(args: argparse.Namespace, flag: str, env: str) -> str:
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    return value if value is not None else os.environ.get(env, "")


def build_echo_bot(
    app_id: str,
    app_secret: str,
    verification_token: str,
    encrypt_key: str | None = None,
    host: str | None = None,
) -> Any:
    """A :class:`~wslarkbot.bot.Bot` replying ``echo: <text>`` to text messages (not to other bots)."""
    from ..bot import Bot
    from ..events import MessageEvent

    bot = Bot(app_id, app_secret, verification_token, encrypt_key or None, host=host)

    @bot.on_text
    async def echo(event: MessageEvent) -> None:
        if event.sender_type == "app":
            return  # never answer a bot (loops)
        await bot.async_api.reply_text(event.message_id, "echo: " + (event.text or ""))

    return bot


def _run(args: argparse.Namespace) -> int:
    values = {flag: _value(args, flag, env) for flag, env, _h in _OPTIONS}
    missing = [f for f in ("--app-id", "--app-secret", "--server") if not values[f]]
    if not values["--verification-token"] and not values["--encrypt-key"]:
        missing.append("--verification-token")  # or --encrypt-key: one of them authenticates Feishu
    if missing:
        envs = {flag: env for flag, env, _h in _OPTIONS}
        names = ", ".join(f"{f} (${envs[f]})" for f in missing)
        print(f"wslarkbot run: missing {names}", file=sys.stderr)
        return 2
    level = "DEBUG" if args.debug else (args.log_level or os.environ.get("WSLARKBOT_LOG_LEVEL") or "INFO")
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    from ..exceptions import ConfigurationError
    from .aio import ReconnectGaveUp, RelayAuthError
    from .sync import Client

    try:
        bot = build_echo_bot(
            values["--app-id"],
            values["--app-secret"],
            values["--verification-token"],
            values["--encrypt-key"],
            values["--feishu-host"] or None,  # Bot reads $WSLARKBOT_FEISHU_HOST itself
        )
        client = Client(
            bot,
            server=values["--server"],
            protocol=values["--protocol"] or None,
            org_name=values["--org-name"],
            org_passwd=values["--org-passwd"],
        )
        client.start()
    except (RelayAuthError, ReconnectGaveUp) as exc:
        logging.getLogger("wslarkbot.client").error("%s", exc)
        return 1
    except ConfigurationError as exc:
        print(f"wslarkbot run: {exc}", file=sys.stderr)
        return 2
    return 0
