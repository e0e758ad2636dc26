"""``create_app()``: the command API over the services it is given.

The app knows nothing of PostgreSQL or Redis: ``open_services`` (opened in the lifespan,
closed after) hands it a way to run commands, a rate limiter, a token verifier and readiness
checks. ``tally.bootstrap`` wires the real ones; unit tests pass in-memory ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide

from command_api.fast_lane import fast_lane
from command_api.problems import exception_to_problem
from command_api.routes import ROUTES, current_user
from command_api.services import CommandServices
from kernel.client_address import TrustedProxies, client_address_middleware
from kernel.http_middleware import http_middleware
from kernel.limit_tiers import Tier, limit_tiers
from kernel.problems import problem_of
from kernel.web_contract import REQUEST_ID, StrictStructs, cors, openapi


class CommandApiConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The command API's own settings."""

    max_body_bytes: int = 64 * 1024
    cors_origins: list[str] = msgspec.field(default_factory=list)
    # Plain votes answered in front of the framework (command_api.fast_lane); off: the route.
    fast_lane: bool = True
    trusted_proxies: str = ""  # whose X-Forwarded-For names the client (kernel.client_address)
    limits: list[Tier] = msgspec.field(default_factory=list)  # kernel.limit_tiers


OpenServices = Callable[[], AbstractAsyncContextManager[CommandServices]]


@get("/health", operation_id="health", include_in_schema=False)
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/ready", operation_id="ready", include_in_schema=False)
async def ready(state: State) -> Any:
    """Readiness: every dependency answers within 2 s."""
    checks: dict[str, str] = {}
    for name, check in state.services.readiness.items():
        try:
            async with asyncio.timeout(2):
                await check()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"down: {type(exc).__name__}"
    if all(v == "ok" for v in checks.values()):
        return {"status": "ready", "checks": checks}
    return problem_of(
        503, "not-ready", "Not ready", "a dependency is down", "/ready", checks=checks
    ).response()


def create_app(open_services: OpenServices, config: CommandApiConfig | None = None) -> Litestar:
    """Build the command API on the services ``open_services`` provides."""
    config = config or CommandApiConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_services() as services:
            app.state.services = services
            yield

    app = Litestar(
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
    if config.fast_lane:
        # In front of the exception handler, CORS and the router: see command_api.fast_lane.
        app.asgi_handler = fast_lane(
            app.asgi_handler, lambda: app.state.services, "command_api", config.max_body_bytes
        )
    app.asgi_handler = limit_tiers(app.asgi_handler, config.limits)
    trusted = TrustedProxies(config.trusted_proxies)
    app.asgi_handler = client_address_middleware(trusted)(app.asgi_handler)
    return app
