"""Every logger writes one JSON object per line, and a message repeated in a loop is cut down."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from kernel.logging import RepeatsSuppressed, configure_logging


def _record(message: str, *args: Any) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, message, args, None)


def test_a_repeated_message_passes_once_per_interval_with_the_count_it_left_out() -> None:
    now = [0.0]
    repeats = RepeatsSuppressed(10, clock=lambda: now[0])
    template = "Unable connect to node with id %s: %s"
    passed = []
    for n in range(5000):
        now[0] = n * 0.01  # 100 a second for 50 s
        record = _record(template, 1, "refused")
        if repeats.filter(record):
            passed.append(getattr(record, "repeated", 0))
    assert passed == [0, 999, 999, 999, 999]
    assert repeats.filter(_record("another message"))  # each template counts on its own


def test_library_loggers_write_json_lines_through_the_same_renderer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    configure_logging("unit", fmt="json")
    logging.getLogger("aiokafka.client").error("Unable connect to node with id %s", 1)
    logging.getLogger("uvicorn.error").warning("plain text from a library")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "Unable connect to node with id 1",
        "plain text from a library",
    ]
    assert lines[0]["logger"] == "aiokafka.client" and lines[0]["level"] == "error"
    assert all(line["service"] == "unit" and "timestamp" in line for line in lines)
