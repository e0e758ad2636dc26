"""``create_app()``: the command API over the services it is given.

The app knows nothing of PostgreSQL or Redis: ``open_services`` (opened in the lifespan,
closed after) hands it a way to run commands, a rate limiter, a token verifier and readiness
checks. ``tally.bootstrap`` wires the real ones; unit tests pass in-memory ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide

from command_api.group_commit import Submit
from command_api.problems import exception_to_problem
from command_api.rate_limit import Quota
from command_api.routes import ROUTES, current_user
from kernel.auth import TokenVerifier
from kernel.http_middleware import http_middleware
from kernel.problems import problem
from kernel.web_contract import REQUEST_ID, StrictStructs, cors, openapi


class RateLimiter(Protocol):
    async def check(self, user_id: str, action: str) -> Quota | None:
        """Count one ``action`` of ``user_id``; ``RateLimited`` over the limit."""
        ...

    async def refund(self, user_id: str, action: str) -> None:
        """Give one back (a replayed request)."""
        ...


@dataclass(frozen=True)
class CommandServices:
    """What the command API needs from the outside world."""

    submit: Submit
    rate_limiter: RateLimiter
    verifier: TokenVerifier
    # name -> a check that raises (or times out) when that dependency is down
    readiness: Mapping[str, Callable[[], Awaitable[object]]] = field(default_factory=dict)


class CommandApiConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The command API's own settings."""

    max_body_bytes: int = 64 * 1024
    cors_origins: list[str] = msgspec.field(default_factory=list)


OpenServices = Callable[[], AbstractAsyncContextManager[CommandServices]]


@get("/health", operation_id="health", include_in_schema=False)
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/ready", operation_id="ready", include_in_schema=False)
async def ready(state: State) -> Any:
    """Readiness: every dependency answers within 2 s."""
    checks: dict[str, str] = {}
    for name, check in state.readiness.items():
        try:
            async with asyncio.timeout(2):
                await check()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"down: {type(exc).__name__}"
    if all(v == "ok" for v in checks.values()):
        return {"status": "ready", "checks": checks}
    return problem(503, "not-ready", "Not ready", "a dependency is down", "/ready", checks=checks)


def create_app(open_services: OpenServices, config: CommandApiConfig | None = None) -> Litestar:
    """Build the command API on the services ``open_services`` provides."""
    config = config or CommandApiConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_services() as services:
            app.state.submit = services.submit
            app.state.rate_limiter = services.rate_limiter
            app.state.verifier = services.verifier
            app.state.readiness = services.readiness
            yield

    return Litestar(
        route_handlers=[*ROUTES, health, ready],
        dependencies={"user_id": Provide(current_user)},
        lifespan=[lifespan],
        middleware=[http_middleware("command_api")],
        exception_handlers={Exception: exception_to_problem},
        request_max_body_size=config.max_body_bytes,
        cors_config=cors(config.cors_origins),
        parameters=REQUEST_ID,
        plugins=[StrictStructs()],
        openapi_config=openapi("Tally command API"),
    )
