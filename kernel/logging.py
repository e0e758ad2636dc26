"""structlog set-up: JSON in production, pretty on a terminal; context vars carry ids.

Library loggers (aiokafka, elasticsearch, uvicorn...) go through the same renderer, so every
line a process writes is one JSON object; a library that repeats one message in a loop (aiokafka
while its only broker is down: thousands a second) is cut to one line per ``REPEAT_SECONDS``
that says how many were left out.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import structlog

REPEAT_SECONDS = 10.0


class RepeatsSuppressed(logging.Filter):
    """Passes the first record of each message template, then one per ``seconds`` carrying
    ``repeated``: how many were dropped since the last one passed."""

    def __init__(
        self, seconds: float = REPEAT_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._seconds = seconds
        self._clock = clock
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)  # the template: the same message with other arguments
        now = self._clock()
        passed_at, dropped = self._seen.get(key, (float("-inf"), 0))
        if now - passed_at < self._seconds:
            self._seen[key] = (passed_at, dropped + 1)
            return False
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if dropped:
            record.repeated = dropped
        return True


def configure_logging(service: str, fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog and stdlib logging once per process."""
    pretty = fmt == "pretty" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if pretty else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.addFilter(RepeatsSuppressed())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    # Client libraries that log every request at INFO: only their warnings are news.
    for noisy in ("elasticsearch", "aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Its "node has failed" warnings repeat the error the caller handles and reports.
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
