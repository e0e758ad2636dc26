"""structlog set-up: JSON in production, pretty on a terminal; context vars carry ids."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(service: str, fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog and stdlib logging once per process."""
    pretty = fmt == "pretty" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if pretty else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
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
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")
    # Client libraries that log every request at INFO: only their warnings are news.
    for noisy in ("elasticsearch", "aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Its "node has failed" warnings repeat the error the caller handles and reports.
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
