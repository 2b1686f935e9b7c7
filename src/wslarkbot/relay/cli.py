"""``wslarkbot serve``: the relay. Each :class:`RelayConfig` field is a flag and a ``WSLARKBOT_*`` variable.

Imports nothing heavy at module level: aiohttp is imported inside :func:`serve`, so ``wslarkbot --help``
works without the relay extra.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError
from .config import RelayConfig, env_name, field_kind, flag_name, option_fields
from .config_file import example_config, load_config_file, read_secret_files

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop

__all__ = [
    "CONFIG_ENV",
    "EVENT_LOOP_ENV",
    "build_config",
    "config_path",
    "event_loop_factory",
    "register",
    "serve",
]

_DESCRIPTION = """\
Run the relay: Feishu POSTs webhooks to http://HOST:PORT/hook/<app_id> (or /org_<name>/<app_id>);
bots subscribe with a WebSocket to ws://HOST:PORT/sub/<channel>[,<channel>...][?proto=2].
Each option can also be set in a config file (--config relay.toml, every option as a key of the same
name: `wslarkbot serve --example-config` prints one) and with the environment variable shown; a variable
wins over the file, a flag over both. WSLARKBOT_ADMIN_PASSWORD_FILE / WSLARKBOT_REDIS_FILE (or the keys
admin_password_file, redis_url_file) read those secrets from files.
Logs `wslarkbot relay listening on http://HOST:PORT` once the port is bound.
Uses uvloop when it is installed (the relay extra); WSLARKBOT_EVENT_LOOP=asyncio keeps the standard loop."""


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="run the webhook-to-WebSocket relay server",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help=f"TOML file of options (keys as the options below, with '_') [env {CONFIG_ENV}]",
    )
    parser.add_argument(
        "--example-config",
        action="store_true",
        help="print a config file with every option, its help and its default, and exit",
    )
    for f in option_fields():
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


#: The config file's variable (``--config`` wins).
CONFIG_ENV = "WSLARKBOT_CONFIG"


def config_path(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str | None:
    """The config file to read: ``--config``, else ``$WSLARKBOT_CONFIG``, else none."""
    env = os.environ if environ is None else environ
    return getattr(args, "config", None) or env.get(CONFIG_ENV) or None


def build_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> RelayConfig:
    """Flags over ``WSLARKBOT_*`` variables over the config file over defaults (config_file.py).

    Raises:
        ConfigurationError: the file, a variable or a value is invalid.
    """
    env = dict(os.environ if environ is None else environ)
    path = config_path(args, env)
    from_file = load_config_file(path) if path else {}
    from_env = {**RelayConfig.env_values(env), **read_secret_files(env)}
    flags = {
        f.name: getattr(args, f.name) for f in option_fields() if getattr(args, f.name, None) is not None
    }
    return RelayConfig(**{**from_file, **from_env, **flags})


_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def escape_controls(text: str) -> str:
    """``text`` with control characters (CR, LF, ESC, ...) written as ``\\r``, ``\\n``, ``\\x1b``."""
    if not _CONTROLS.search(text):
        return text
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], text)


#: Structured fields a log call may pass with ``extra=`` (publish.py's per-webhook line does).
LOG_FIELDS = ("request_id", "channel", "status", "latency_ms")


class _SecondCache:
    """``strftime`` of the current second, computed once per second (a log line per webhook asks often)."""

    __slots__ = ("_convert", "_fmt", "_sec", "_text")

    def __init__(self, fmt: str, convert: Callable[[float], time.struct_time]) -> None:
        self._fmt = fmt
        self._convert = convert
        self._sec = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        sec = int(created)
        if sec != self._sec:
            self._text = time.strftime(self._fmt, self._convert(sec))
            self._sec = sec
        return self._text


class _TextFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)s %(name)s: %(message)s`` with the standard ``asctime`` (local time,
    ``2026-11-28 19:40:04,123``), its date part formatted once per second instead of once per line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = _SecondCache(self.default_time_format, time.localtime)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:  # pragma: no cover - not used by the relay
            return super().formatTime(record, datefmt)
        return f"{self._second(record.created)},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The message may hold what a peer sent (a path, an id, a channel name): its control characters
        # are shown escaped, so a percent-encoded CR/LF cannot start a forged line. A traceback (added
        # after this by format()) keeps its own lines.
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, msg, and :data:`LOG_FIELDS` when present."""

    def __init__(self) -> None:
        super().__init__()
        self._second = _SecondCache("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": f"{self._second(record.created)}.{int(record.msecs):03d}Z",
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
        handler.setFormatter(_TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = logging.getLevelName(config.log_level.upper())
    root.setLevel(level if isinstance(level, int) else logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def serve(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM; then shut down gracefully (503 to waiting requests, 1001 to sockets)."""
    if getattr(args, "example_config", False):
        sys.stdout.write(example_config())
        return 0
    try:
        config = build_config(args)
    except ConfigurationError as exc:
        print(f"wslarkbot serve: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config)

    import asyncio
    import signal

    from .reload import reload
    from .routes import STATE_KEY
    from .runner import start_relay

    async def main() -> int:
        try:
            relay = await start_relay(config)
        except (ConfigurationError, OSError) as exc:
            logging.getLogger("wslarkbot.relay").error("cannot start the relay: %s", exc)
            return 1
        freeze_startup_objects()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except NotImplementedError:  # pragma: no cover - Windows
                pass
        state = relay.app[STATE_KEY]
        if hasattr(signal, "SIGHUP"):  # reload what can change live (relay/reload.py)
            loop.add_signal_handler(signal.SIGHUP, lambda: reload(state, lambda: build_config(args)))
        try:
            await stop.wait()
        finally:
            logging.getLogger("wslarkbot.relay").info("wslarkbot relay stopping")
            await relay.stop()
        return 0

    factory = event_loop_factory()
    if factory is None:
        return asyncio.run(main())
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main())
    import uvloop  # pragma: no cover - Python 3.10

    uvloop.install()  # pragma: no cover
    return asyncio.run(main())  # pragma: no cover


def freeze_startup_objects() -> None:
    """Move everything alive after start-up out of the garbage collector's sight (``gc.freeze()``).

    Only for a process that is the relay (``wslarkbot serve``): modules, aiohttp, prometheus-client and the
    app are tens of thousands of long-lived objects, and every full (generation 2) collection walked all of
    them: ~27 ms during which no webhook is served, a latency tail of its own. Frozen, they are skipped;
    objects created later are collected as usual. (Not for an embedded relay: in a shared process, frozen
    objects that later become cyclic garbage are never freed.)
    """
    import gc

    gc.collect()
    gc.freeze()


#: ``WSLARKBOT_EVENT_LOOP=asyncio`` keeps the standard event loop even when uvloop is installed.
EVENT_LOOP_ENV = "WSLARKBOT_EVENT_LOOP"


def event_loop_factory(environ: Mapping[str, str] | None = None) -> Callable[[], AbstractEventLoop] | None:
    """uvloop's loop factory when uvloop is installed (the ``relay`` extra), else None (the standard loop).

    uvloop runs the socket and timer machinery in C: per webhook, the relay spends noticeably less time
    in the event loop (docs/performance.md, "Profile and optimisation"). ``WSLARKBOT_EVENT_LOOP=asyncio``
    opts out.
    """
    env = os.environ if environ is None else environ
    if env.get(EVENT_LOOP_ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], AbstractEventLoop] = uvloop.new_event_loop
    return factory
