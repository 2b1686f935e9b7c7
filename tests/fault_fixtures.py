"""The pytest side of the fault tests (tests/test_faults_*.py): the ``world`` fixture and the POSIX-only mark.

Kept apart from ``fault_harness.py``, which is also the bot process's script and so does not import pytest.
Import the fixture under its function name to register it::

    from fault_fixtures import posix_only, world_fixture  # noqa: F401  (registers `world`)

    pytestmark = posix_only
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fault_harness import World

__all__ = ["posix_only", "world_fixture"]

#: The fault tests kill and freeze real processes with POSIX signals.
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and processes")


@pytest.fixture(name="world")
async def world_fixture(tmp_path: Path) -> AsyncIterator[World]:
    """A :class:`~fault_harness.World` in ``tmp_path``; every process it started is stopped at the end."""
    w = World(tmp_path)
    try:
        yield w
    finally:
        await w.close()
