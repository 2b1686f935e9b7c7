"""``wslarkbot simulate`` and ``wslarkbot demo``: the simulator's tools for newcomers and operators.

:func:`register` imports nothing heavy (the handlers import the simulator, aiohttp and the relay), so
``wslarkbot --help`` works with only the SDK installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from ..exceptions import ConfigurationError

__all__ = ["register"]

_KINDS = ("text", "card", "challenge", "legacy-card")  # = simulate.KINDS, without importing it

#: (flag, environment variable, help)
_APP_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--app-id", "WSLARKBOT_APP_ID", "the app's App ID (default: the URL's last part when it is cli_...)"),
    ("--encrypt-key", "WSLARKBOT_ENCRYPT_KEY", "the Encrypt Key; without it the request is plaintext"),
    ("--verification-token", "WSLARKBOT_VERIFICATION_TOKEN", "the Verification Token; required"),
)

_SIMULATE_DESCRIPTION = """\
Send one request to a webhook URL exactly as Feishu would (encrypted with the Encrypt Key, signed,
with the Verification Token inside) and show Feishu's view of the answer: status, time, verdict, why,
what to check, and the retries Feishu would make. Exit status 0 when Feishu would be satisfied, 1 when
not, 2 for a usage error.

examples:
  wslarkbot simulate --url http://127.0.0.1:8888/hook/cli_a1b2 --kind challenge
  WSLARKBOT_ENCRYPT_KEY=... WSLARKBOT_VERIFICATION_TOKEN=... \\
      wslarkbot simulate --url https://relay.example.com/hook/cli_a1b2 --text "hi"
"""

_DEMO_DESCRIPTION = """\
Run the whole chain locally, without a Feishu account: a relay on a free port, a fake Feishu OpenAPI,
an echo bot connected through the real client, and a simulated Feishu. It sends a challenge, a text
message and a card click, prints every hop with its timing, and exits 0 when every hop happened
(1 otherwise)."""


def register(subparsers: Any) -> None:
    """Add ``simulate`` and ``demo`` to the ``wslarkbot`` command line."""
    sim = subparsers.add_parser(
        "simulate",
        help="send a signed, encrypted test event to a URL and judge the answer as Feishu does",
        description=_SIMULATE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sim.add_argument("--url", required=True, help="where Feishu would POST, e.g. http://relay/hook/cli_x")
    sim.add_argument("--kind", choices=_KINDS, default="text", help="what to send (default: text)")
    for flag, env, help_text in _APP_OPTIONS:
        sim.add_argument(flag, default=None, help=f"{help_text} [${env}]")
    sim.add_argument("--text", default="hello from wslarkbot simulate", help="the text message's text")
    sim.add_argument(
        "--value",
        default=None,
        metavar="JSON",
        help='the clicked button\'s value, a JSON object (default {"action": "wslarkbot-simulate"})',
    )
    sim.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help="for a failed text event, really make N of Feishu's 4 retries (default 0)",
    )
    sim.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="multiply Feishu's retry intervals (15 s, 5 min, 1 h, 6 h) by F, e.g. 0.001",
    )
    sim.add_argument(
        "--cacert",
        default=None,
        metavar="FILE",
        help="trust this CA bundle (PEM) for an https:// URL, e.g. a relay with a private CA's certificate",
    )
    sim.add_argument("--json", action="store_true", help="print the report as JSON")
    sim.set_defaults(func=_simulate)

    demo = subparsers.add_parser(
        "demo",
        help="run relay, bot, fake OpenAPI and a simulated Feishu locally and show every hop",
        description=_DEMO_DESCRIPTION,
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="keep everything running afterwards (Ctrl-C stops), for trying `wslarkbot simulate` against it",
    )
    demo.add_argument(
        "--wrong-encrypt-key",
        action="store_true",
        help="give the bot a different Encrypt Key, to see what a misconfigured bot looks like",
    )
    demo.add_argument(
        "--hop-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for each hop (default 5)",
    )
    demo.set_defaults(func=_demo)


def _option(args: argparse.Namespace, flag: str, env: str) -> str:
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    return value if value is not None else os.environ.get(env, "")


def _app_id_from_url(url: str) -> str:
    last = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    return last if last.startswith("cli_") else ""


def _fail(message: str) -> int:
    print(f"wslarkbot simulate: {message}", file=sys.stderr)
    return 2


def _simulate(args: argparse.Namespace) -> int:
    values = {flag: _option(args, flag, env) for flag, env, _h in _APP_OPTIONS}
    app_id = values["--app-id"] or _app_id_from_url(args.url)
    if not app_id:
        return _fail("missing --app-id ($WSLARKBOT_APP_ID); the URL does not end with one")
    if not values["--verification-token"]:
        return _fail("missing --verification-token ($WSLARKBOT_VERIFICATION_TOKEN)")
    if urlsplit(args.url).scheme not in ("http", "https"):
        return _fail(f"--url must be an http:// or https:// URL, not {args.url!r}")
    value = None
    if args.value is not None:
        try:
            value = json.loads(args.value)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            return _fail('--value must be a JSON object, e.g. \'{"action": "approve"}\'')

    import asyncio

    from .app import SimApp
    from .simulate import format_report, simulate

    app = SimApp(app_id, "", values["--verification-token"], values["--encrypt-key"] or None)
    try:
        report = asyncio.run(
            simulate(
                app,
                args.url,
                args.kind,
                text=args.text,
                value=value,
                retries=args.retries,
                time_scale=args.time_scale,
                cacert=args.cacert,
            )
        )
    except (ValueError, ConfigurationError) as exc:  # a bad --kind/--retries, an unreadable --cacert
        return _fail(str(exc))
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def _demo(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    # The parts log only problems (a rejected request, a lost connection): show them, briefly.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="   log %(name)s: %(message)s")

    try:
        from .demo import run_demo
    except ModuleNotFoundError as exc:
        if exc.name != "aiohttp":
            raise
        print("wslarkbot demo: needs the relay extra: pip install 'wslarkbot[relay]'", file=sys.stderr)
        return 2

    try:
        return asyncio.run(
            run_demo(
                keep_running=args.keep_running,
                wrong_encrypt_key=args.wrong_encrypt_key,
                hop_timeout=args.hop_timeout,
            )
        )
    except KeyboardInterrupt:  # Ctrl-C before the demo finished (with --keep-running it exits 0)
        return 130
