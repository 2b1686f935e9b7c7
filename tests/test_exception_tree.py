"""Every exception class the package defines derives from ``WslarkbotError``: ``except WslarkbotError``
catches whatever wslarkbot raises on purpose."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import wslarkbot
from wslarkbot.exceptions import WslarkbotError

#: Known exceptions to the rule, each to be fixed in its module (then removed from here).
KNOWN: set[str] = set()


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(wslarkbot.__path__, "wslarkbot."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_exception_class_of_the_package_is_a_wslarkbot_error():
    classes = _exception_classes()
    assert "wslarkbot.sim.openapi_messages.OpenAPIFailure" in classes  # the walk reaches the subpackages
    outside = {name for name, cls in classes.items() if not issubclass(cls, WslarkbotError)}
    assert outside <= KNOWN, sorted(outside - KNOWN)
