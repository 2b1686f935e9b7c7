"""``wslarkbot serve``: the relay. Each :class:`RelayConfig` field is a flag and a ``WSLARKBOT_*`` variable.

Imports nothing heavy at module level: aiohttp is imported inside :func:`serve`, so ``wslarkbot --help``
works without the relay extra.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from typing import Any

from ..exceptions import ConfigurationError
from .config import RelayConfig, env_name, field_kind, flag_name

__all__ = ["build_config", "register", "serve"]

_DESCRIPTION = """\
Run the relay: Feishu POSTs webhooks to http://HOST:PORT/hook/<app_id> (or /org_<name>/<app_id>);
bots subscribe with a WebSocket to ws://HOST:PORT/sub/<channel>[,<channel>...][?proto=2].
Each option can also be set with the environment variable shown; a flag wins over the variable.
Logs `wslarkbot relay listening on http://HOST:PORT` once the port is bound."""


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="run the webhook-to-WebSocket relay server",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for f in dataclasses.fields(RelayConfig):
        help_text = f"{f.metadata.get('help', '')} [env {env_name(f.name)}; default {f.default!r}]"
        kind = field_kind(f)
        if kind == "bool":
            parser.add_argument(
                flag_name(f.name),
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag_name(f.name),
                dest=f.name,
                type={"int": int, "float": float}.get(kind, str),
                default=None,
                metavar=f.name.upper(),
                help=help_text,
            )
    parser.set_defaults(func=serve)


def build_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> RelayConfig:
    """Flags over ``WSLARKBOT_*`` variables over defaults.

    Raises:
        ConfigurationError: a variable or value is invalid.
    """
    env = dict(os.environ if environ is None else environ)
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(RelayConfig)
        if getattr(args, f.name, None) is not None
    }
    return RelayConfig.from_env(env, **overrides)


#: Structured fields a log call may pass with ``extra=`` (publish.py's per-webhook line does).
LOG_FIELDS = ("request_id", "channel", "status", "latency_ms")


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, msg, and :data:`LOG_FIELDS` when present."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in LOG_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def _setup_logging(config: RelayConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.log_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = logging.getLevelName(config.log_level.upper())
    root.setLevel(level if isinstance(level, int) else logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def serve(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM; then shut down gracefully (503 to waiting requests, 1001 to sockets)."""
    try:
        config = build_config(args)
    except ConfigurationError as exc:
        print(f"wslarkbot serve: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config)

    import asyncio
    import signal

    from .runner import start_relay

    async def main() -> int:
        try:
            relay = await start_relay(config)
        except (ConfigurationError, OSError) as exc:
            logging.getLogger("wslarkbot.relay").error("cannot start the relay: %s", exc)
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except NotImplementedError:  # pragma: no cover - Windows
                pass
        try:
            await stop.wait()
        finally:
            logging.getLogger("wslarkbot.relay").info("wslarkbot relay stopping")
            await relay.stop()
        return 0

    return asyncio.run(main())
