"""The relay's layout holds: its core imports neither aiohttp nor the gateway (issue 17).

Both servers (aiohttp's routes and the fast path) stand on one core; if the core imported a server or the
gateway, the two would drift again. Checked on the source: every import a core module makes at run time
(not under ``if TYPE_CHECKING:``), followed through the package.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import wslarkbot

SRC = pathlib.Path(wslarkbot.__file__).parent

#: The relay core: answers, wait policy, pending replies, subscribers, buffers, groups, hubs, the logic
#: halves of publish and subscribe, WebSocket policy, outcomes.
CORE = [
    "wslarkbot.relay.answer",
    "wslarkbot.relay.buffer",
    "wslarkbot.relay.fanout",
    "wslarkbot.relay.groups",
    "wslarkbot.relay.hub",
    "wslarkbot.relay.limits",
    "wslarkbot.relay.outcomes",
    "wslarkbot.relay.pending",
    "wslarkbot.relay.policy",
    "wslarkbot.relay.publish",
    "wslarkbot.relay.redis_hub",
    "wslarkbot.relay.state",
    "wslarkbot.relay.subscribe",
    "wslarkbot.relay.subscriber",
    "wslarkbot.relay.ws_policy",
]
FORBIDDEN = ("aiohttp", "wslarkbot.relay.longconn", "wslarkbot.relay.routes", "wslarkbot.relay.fastpath")


def _path(module: str) -> pathlib.Path | None:
    if not module.startswith("wslarkbot"):
        return None
    if module == "wslarkbot":
        return SRC / "__init__.py"
    rel = pathlib.Path(*module.split(".")[1:])
    for candidate in (SRC / rel.with_suffix(".py"), SRC / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _runtime_imports(module: str) -> set[str]:
    """Modules ``module`` imports when it runs (relative imports resolved; TYPE_CHECKING blocks skipped)."""
    path = _path(module)
    assert path is not None, module
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{alias.name}" for alias in node.names if _path(f"{name}.{alias.name}"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _closure(start: str) -> dict[str, str]:
    """Every module ``start`` reaches at run time, each with the module that imported it."""
    seen: dict[str, str] = {start: ""}
    todo = [start]
    while todo:
        mod = todo.pop()
        for name in _runtime_imports(mod):
            if name in seen:
                continue
            seen[name] = mod
            if name.startswith("wslarkbot") and _path(name):
                todo.append(name)
    return seen


@pytest.mark.parametrize("module", CORE)
def test_the_relay_core_imports_neither_aiohttp_nor_the_gateway(module: str) -> None:
    reached = _closure(module)
    bad = {name: by for name, by in reached.items() if name.startswith(FORBIDDEN)}
    assert not bad, f"{module} reaches {bad} (imported by)"


def test_the_layout_check_sees_an_import_of_aiohttp() -> None:
    """The check above can fail: the aiohttp routes do reach aiohttp."""
    assert "aiohttp" in _closure("wslarkbot.relay.routes")
