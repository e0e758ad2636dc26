"""One ASGI middleware for every HTTP app: correlation ids, request metrics and trace spans.

The correlation id comes from ``X-Request-ID`` (or is made up), is bound to structlog's context
for the request, stored in event metadata by the write path, and echoed in the response.
Metrics: one histogram per (service, method, route template, status); its count is the request
rate and, by status, the error rate. Tracing: one server span per request (not for health and
metrics), continuing the caller's ``traceparent`` when it came through a trusted proxy
(``kernel.client_address``); see ``kernel.tracing``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import Histogram

from kernel import tracing
from kernel.client_address import via_trusted_proxy
from kernel.ids import random_uuid

HEADER = b"x-request-id"
_VALID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")

REQUEST_SECONDS = Histogram(
    "tally_http_request_duration_seconds",
    "HTTP request latency by route and status",
    ["service", "method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
_SKIP_METRICS = {"/metrics", "/health"}
_UNTRACED = {"/metrics", "/health", "/ready"}
_TRACE_HEADERS = {b"traceparent", b"tracestate"}


def correlation_id_of(incoming: bytes) -> str:
    """The caller's ``X-Request-ID`` if it is a sane one, else a new id."""
    return incoming.decode() if _VALID.match(incoming) else random_uuid().hex


def http_middleware(service: str) -> Callable[[ASGIApp], ASGIApp]:
    """Middleware factory for ``Litestar(middleware=[...])``."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
            elif (tracer := tracing.tracer()) is None or scope["path"] in _UNTRACED:
                await handle(scope, receive, send, scope["method"], None)
            else:
                carrier = {
                    k.decode(): v.decode("latin-1")
                    for k, v in scope["headers"]
                    if k in _TRACE_HEADERS
                }
                attributes: dict[str, str] = {"http.request.method": scope["method"]}
                # Only a trusted proxy may choose the trace and force sampling; anyone else's
                # traceparent is recorded, and our sampler decides on a trace of our own.
                trusted = via_trusted_proxy(scope)
                if carrier and not trusted:
                    attributes["tally.client_traceparent"] = carrier.get("traceparent", "")[:64]
                with tracer.start_as_current_span(
                    scope["method"],
                    context=tracing.remote_context(carrier) if trusted else None,
                    kind=SpanKind.SERVER,
                    attributes=attributes,
                ) as span:
                    await handle(scope, receive, send, scope["method"], span)

        async def handle(
            scope: Scope, receive: Receive, send: Send, method: str, span: Span | None
        ) -> None:
            started = time.perf_counter()
            incoming = next((v for k, v in scope["headers"] if k == HEADER), b"")
            correlation_id = correlation_id_of(incoming)
            structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
            status = 500

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [
                        *message.get("headers", []),
                        (HEADER, correlation_id.encode()),
                    ]
                await send(message)

            try:
                await app(scope, receive, send_with_id)
            finally:
                structlog.contextvars.unbind_contextvars("correlation_id")
                handler = scope.get("route_handler")
                route = next(iter(handler.paths)) if handler is not None else "unmatched"
                if span is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attributes(
                        {
                            "http.route": route,
                            "http.response.status_code": status,
                            "tally.correlation_id": correlation_id,
                        }
                    )
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                if route not in _SKIP_METRICS:
                    REQUEST_SECONDS.labels(service, method, route, str(status)).observe(
                        time.perf_counter() - started
                    )

        return middleware

    return factory
