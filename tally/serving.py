"""App factories for ``tally serve``.

uvicorn starts each worker as a fresh process (spawn), which keeps nothing the parent set up,
so each worker configures its own logging and tracing here before building its app.
"""

from __future__ import annotations

from collections.abc import Callable

from litestar import Litestar

from tally.logging import configure_logging
from tally.settings import Settings, get_settings
from tally.tracing import configure_tracing


def _served(service: str, create_app: Callable[[Settings], Litestar]) -> Litestar:
    settings = get_settings()
    configure_logging(service, settings.log_format, settings.log_level)
    configure_tracing(settings, service)
    return create_app(settings)


def command_api() -> Litestar:
    """The command API of one worker process."""
    from command_api.app import create_app

    return _served("command-api", create_app)


def query_api() -> Litestar:
    """The query API of one worker process."""
    from query_api.app import create_app

    return _served("query-api", create_app)
