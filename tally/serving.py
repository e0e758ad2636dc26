"""App factories for ``tally serve``.

uvicorn starts each worker as a fresh process (spawn), which keeps nothing the parent set up,
so each worker configures its own logging and tracing here before building its app.
"""

from __future__ import annotations

from collections.abc import Callable

from litestar import Litestar

from kernel.logging import configure_logging
from kernel.runtime import tune_gc
from kernel.settings import Settings, get_settings
from kernel.tracing import configure_tracing


def _served(service: str, build: Callable[[Settings], Litestar]) -> Litestar:
    settings = get_settings()
    configure_logging(service, settings.log_format, settings.log_level)
    configure_tracing(settings, service)
    app = build(settings)
    tune_gc()
    return app


def command_api() -> Litestar:
    """The command API of one worker process."""
    from tally.bootstrap import command_app

    return _served("command-api", command_app)


def web_page() -> Litestar:
    """The reference web page's server."""
    from tally.web_page import web_app

    return _served("web", web_app)


def query_api() -> Litestar:
    """The query API of one worker process."""
    from tally.bootstrap import query_app

    return _served("query-api", query_app)
