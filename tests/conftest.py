"""Shared test fixtures. The Feishu simulator's fixtures come from its pytest plugin."""

from __future__ import annotations

import pathlib

import pytest

pytest_plugins = ["wslarkbot.sim.pytest_plugin"]

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "feishu"
SAMPLES = pathlib.Path(__file__).resolve().parent / "samples"


@pytest.fixture
def samples_dir() -> pathlib.Path:
    """Official sample payloads (copied into tests/samples from ../shared/feishu/samples)."""
    return SAMPLES
