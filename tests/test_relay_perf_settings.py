"""Hot-path settings of ``wslarkbot serve``: the event loop choice and the cheap log formatters."""

from __future__ import annotations

import json
import logging

import pytest

from wslarkbot.relay.cli import EVENT_LOOP_ENV, _JsonFormatter, _TextFormatter, event_loop_factory


def record(created: float) -> logging.LogRecord:
    rec = logging.LogRecord("wslarkbot.relay", logging.INFO, __file__, 1, "webhook %s", ("req-1",), None)
    rec.created = created
    rec.msecs = round((created - int(created)) * 1000, 3)
    return rec


@pytest.mark.parametrize("created", [1_764_358_804.123, 1_764_358_804.999, 1_764_358_805.0, 1_700_000_000.5])
def test_text_formatter_writes_what_the_standard_formatter_writes(created: float) -> None:
    standard = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = _TextFormatter()
    for _ in range(2):  # the second call uses the cached second
        assert ours.format(record(created)) == standard.format(record(created))


def test_json_formatter_timestamp_is_utc_with_milliseconds() -> None:
    fmt = _JsonFormatter()
    first = json.loads(fmt.format(record(1_764_358_804.123)))
    assert first["ts"] == "2025-11-28T19:40:04.123Z"
    assert json.loads(fmt.format(record(1_764_358_805.007)))["ts"] == "2025-11-28T19:40:05.007Z"


def test_uvloop_is_used_when_installed_unless_opted_out() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert event_loop_factory({}) is uvloop.new_event_loop
    assert event_loop_factory({EVENT_LOOP_ENV: "asyncio"}) is None
