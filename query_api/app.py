"""``create_app()``: the query API over the read models it is given.

``open_services`` (opened in the lifespan) hands it the Redis and Elasticsearch readers and a
token verifier; ``tally.bootstrap`` wires the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State

from kernel.auth import NotAuthenticated, TokenVerifier
from kernel.client_address import TrustedProxies, client_address_middleware
from kernel.http_middleware import http_middleware
from kernel.limit_tiers import Tier, limit_tiers
from kernel.problems import Problem, framework_problem, problem_of
from kernel.redis_client import closed_under_us
from kernel.web_contract import REQUEST_ID, StrictStructs, cors, openapi
from query_api.consistency import BeyondHead, NotYet
from query_api.cursors import BadCursor
from query_api.es_reads import EsReads
from query_api.fast_lane import fast_lane
from query_api.live import bounded_writes, stream_scores
from query_api.live_hub import LiveHub, StreamsFull, TooManyStreams
from query_api.redis_reads import RedisReads
from query_api.routes import ROUTES, Unavailable, UnknownComment


def query_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Our errors to problem+json; the rest as every app does."""
    known = _read_problem(exc, request.url.path)
    return known.response() if known is not None else framework_problem(request, exc)


def _read_problem(exc: Exception, path: str) -> Problem | None:
    """The answer to one of the read side's own errors; ``None`` for any other."""
    if isinstance(exc, UnknownComment):
        return problem_of(404, "comment-not-found", "Comment not found", str(exc), path)
    if isinstance(exc, BeyondHead):
        return problem_of(400, "position-beyond-head", "Bad request", str(exc), path, head=exc.head)
    if isinstance(exc, NotYet):
        return problem_of(
            504,
            "not-yet-visible",
            "Not visible yet",
            str(exc),
            path,
            {"X-Tally-Position": str(exc.reached)},
            reached=exc.reached,
        )
    if isinstance(exc, Unavailable) or closed_under_us(exc):
        return problem_of(503, "read-model-unavailable", "Service unavailable", str(exc), path)
    if isinstance(exc, BadCursor | msgspec.ValidationError):
        return problem_of(400, "bad-parameter", "Bad request", str(exc), path)
    if isinstance(exc, StreamsFull):
        return problem_of(
            503, "streams-full", "Service unavailable", str(exc), path, {"Retry-After": "5"}
        )
    if isinstance(exc, TooManyStreams):
        wait = {"Retry-After": str(exc.retry_after)}
        return problem_of(429, "too-many-streams", "Too many requests", str(exc), path, wait)
    if isinstance(exc, NotAuthenticated):
        return problem_of(
            401,
            "unauthenticated",
            "Authentication required",
            str(exc),
            path,
            {"WWW-Authenticate": 'Bearer realm="tally"'},
        )
    return None


@get("/health", operation_id="health", include_in_schema=False)
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/ready", operation_id="ready", include_in_schema=False)
async def ready(state: State) -> Any:
    """Which read models answer: ready (both), degraded (one) or not ready (none)."""
    checks = {}
    for name, ping in (
        ("redis", state.redis_reads.redis.ping),
        ("elasticsearch", state.es_reads.es.ping),
    ):
        try:
            async with asyncio.timeout(2):
                checks[name] = "ok" if await ping() else "down"
        except Exception as exc:
            checks[name] = f"down: {type(exc).__name__}"
    up = [n for n, v in checks.items() if v == "ok"]
    if not up:
        return problem_of(
            503, "not-ready", "Not ready", "no read model answers", "/ready", checks=checks
        ).response()
    return {"status": "ready" if len(up) == len(checks) else "degraded", "checks": checks}


@dataclass(frozen=True)
class QueryServices:
    """What the query API reads from."""

    redis_reads: RedisReads
    es_reads: EsReads
    verifier: TokenVerifier
    live: LiveHub


class QueryApiConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The query API's own settings."""

    read_wait_ms: int = 2000
    page_cache_ms: int = 250
    cors_origins: list[str] = msgspec.field(default_factory=list)
    trusted_proxies: str = ""  # whose X-Forwarded-For names the client (kernel.client_address)
    limits: list[Tier] = msgspec.field(default_factory=list)  # kernel.limit_tiers
    live_write_seconds: float = 10.0


OpenServices = Callable[[], AbstractAsyncContextManager[QueryServices]]


def create_app(open_services: OpenServices, config: QueryApiConfig | None = None) -> Litestar:
    """Build the query API on the read models ``open_services`` provides."""
    config = config or QueryApiConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_services() as services:
            app.state.config = config
            app.state.redis_reads = services.redis_reads
            app.state.es_reads = services.es_reads
            app.state.verifier = services.verifier
            app.state.live = services.live
            yield

    app = Litestar(
        route_handlers=[*ROUTES, stream_scores, health, ready],
        lifespan=[lifespan],
        middleware=[http_middleware("query_api")],
        exception_handlers={Exception: query_problem},
        cors_config=cors(config.cors_origins),
        parameters=REQUEST_ID,
        plugins=[StrictStructs()],
        openapi_config=openapi("Tally query API"),
    )
    # In front of the exception handler, CORS and the router: see query_api.fast_lane.
    app.asgi_handler = fast_lane(
        app.asgi_handler, lambda: app.state.redis_reads, "query_api", config.page_cache_ms / 1000
    )
    app.asgi_handler = bounded_writes(app.asgi_handler, config.live_write_seconds)
    app.asgi_handler = limit_tiers(app.asgi_handler, config.limits)
    trusted = TrustedProxies(config.trusted_proxies)
    app.asgi_handler = client_address_middleware(trusted)(app.asgi_handler)
    return app
