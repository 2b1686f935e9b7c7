"""A settable clock for the tests, and a ``clock`` fixture of it (test_openapi.py, test_fake_openapi*.py,
test_chat.py).

``tests/`` is on ``sys.path``::

    from fake_clock import Clock, clock_fixture  # noqa: F401  (registers `clock`)
"""

from __future__ import annotations

import pytest

__all__ = ["Clock", "clock_fixture"]


class Clock:
    """A settable epoch clock (``clock.now = ...``), shared by a client and the fake it talks to."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="clock")
def clock_fixture() -> Clock:
    return Clock()
