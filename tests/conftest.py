"""Shared test fixtures. The Feishu simulator's fixtures come from its pytest plugin."""

from __future__ import annotations

import os
import pathlib

import pytest

import system_programs

pytest_plugins = ["wslarkbot.sim.pytest_plugin"]

# No test reaches the real Feishu: a Bot given no host of its own (and every bot process a test starts)
# calls this closed loopback port, e.g. for the client's credential check at start.
os.environ.setdefault("WSLARKBOT_FEISHU_HOST", "http://127.0.0.1:9")

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "feishu"
SAMPLES = pathlib.Path(__file__).resolve().parent / "samples"


@pytest.fixture
def samples_dir() -> pathlib.Path:
    """Official sample payloads (copied into tests/samples from ../shared/feishu/samples)."""
    return SAMPLES


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "system_program(name): the test needs that system program (tests/system_programs.py)"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("system_program"):
        system_programs.require(*marker.args)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if system_programs.skipped:
        counts = ", ".join(f"{name} ({n} tests)" for name, n in sorted(system_programs.skipped.items()))
        terminalreporter.write_line(
            f"skipped for want of system programs: {counts}; `{system_programs.INSTALL_ALL}` installs them"
        )
