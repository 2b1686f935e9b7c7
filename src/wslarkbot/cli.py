"""``wslarkbot`` command line: ``serve`` (the relay), ``run`` (an echo bot), and more.

Each subcommand lives with its feature and registers itself here through a ``register(subparsers)``
function that imports nothing heavy, so ``wslarkbot --help`` works with only the SDK installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

__all__ = ["build_parser", "main"]

#: module paths providing ``register(subparsers)``; each adds one or more subcommands.
_COMMAND_MODULES = (
    "wslarkbot.relay.cli",
    "wslarkbot.client.cli",
    "wslarkbot.sim.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wslarkbot",
        description="Feishu/Lark bots without a public URL: relay server, bot client and Feishu simulator.",
    )
    parser.add_argument("--version", action="version", version=f"wslarkbot {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for path in _COMMAND_MODULES:
        try:
            module = importlib.import_module(path)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("wslarkbot"):
                continue  # that feature is not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    result = func(args)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
