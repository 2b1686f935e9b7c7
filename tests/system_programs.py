"""The system programs some tests need, and what a test does without one: skip, or fail under CI.

On a fresh machine with only Python 3, ``make test`` passes: a test that needs Apache's ``htpasswd``,
``redis-server``, nginx with nchan, Chromium or ``systemd-analyze`` skips with one line naming the
program and how to get it, and the run ends with a short summary of what was skipped (``conftest.py``).
``make system-deps`` installs them all (Debian/Ubuntu). CI sets ``WSLARKBOT_REQUIRE_SYSTEM_PROGRAMS=1``:
then a missing program fails the test instead, so CI can never skip silently.

Use :func:`require` where the program is needed (in a test, a fixture or a helper)::

    from system_programs import require

    def htpasswd_line(...):
        require("htpasswd")
        ...
"""

from __future__ import annotations

import collections
import os
import shutil
from collections.abc import Callable

import pytest

__all__ = ["STRICT", "missing", "require", "skipped"]

#: CI's switch: a missing program fails instead of skipping.
STRICT = os.environ.get("WSLARKBOT_REQUIRE_SYSTEM_PROGRAMS") == "1"
INSTALL_ALL = "make system-deps"


def _which(program: str, hint: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if shutil.which(program) else f"{program} is not installed ({hint})"

    return check


def _nchan() -> str | None:
    from nchan_server import missing_requirements

    return missing_requirements()


#: The browser the dashboard test drives (Debian's chromium; ``$WSLARKBOT_CHROMIUM`` for another).
CHROMIUM = os.environ.get("WSLARKBOT_CHROMIUM", "/usr/bin/chromium")


def _chromium() -> str | None:
    return None if os.access(CHROMIUM, os.X_OK) else f"no Chromium at {CHROMIUM} (apt-get install chromium)"


#: name -> a check returning why it is unusable (None: usable)
PROGRAMS: dict[str, Callable[[], str | None]] = {
    "htpasswd": _which("htpasswd", "apt-get install apache2-utils"),
    "redis-server": _which("redis-server", "apt-get install redis-server"),
    "nginx": _which("nginx", "apt-get install nginx"),
    "nginx+nchan": _nchan,
    "chromium": _chromium,
    "systemd-analyze": _which("systemd-analyze", "apt-get install systemd"),
}

#: program -> how many tests skipped for want of it (read by conftest's summary)
skipped: collections.Counter[str] = collections.Counter()


def missing(name: str) -> str | None:
    """Why ``name`` cannot be used here, or None."""
    return PROGRAMS[name]()


def require(name: str) -> None:
    """Skip the running test when ``name`` is missing (fail it instead under ``STRICT``)."""
    why = missing(name)
    if why is None:
        return
    if STRICT:
        pytest.fail(f"{why}; CI requires every system program (WSLARKBOT_REQUIRE_SYSTEM_PROGRAMS=1)")
    skipped[name] += 1
    pytest.skip(f"{why}; `{INSTALL_ALL}` installs every such program")


def mark(name: str) -> pytest.MarkDecorator:
    """A mark for a whole module or test: ``pytestmark = [mark("redis-server")]`` (conftest applies it)."""
    return pytest.mark.system_program(name)
