"""What both HTTP APIs promise a browser: CORS and a truthful OpenAPI document.

Handlers that answer with pre-encoded bytes (the fast path) still declare their body's type
with ``ResponseSpec``; every error a route can answer is declared here once, as the
``application/problem+json`` body ``kernel.problems`` sends, and ``problems(...)`` picks them.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Response, route
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.config.cors import CORSConfig
from litestar.datastructures import ResponseHeader
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, Schema, SecurityScheme
from litestar.params import HeaderParameter
from litestar.typing import FieldDefinition

from kernel.problems import PROBLEM_JSON

# The headers a browser app must be able to read from a cross-origin answer.
EXPOSED_HEADERS = [
    "X-Tally-Position",
    "X-Tally-Stale",
    "X-Tally-Degraded",
    "X-Request-ID",
    "ETag",
    "Location",
    "Retry-After",
    "Idempotent-Replayed",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
]
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


class Problem(msgspec.Struct, kw_only=True):
    """An RFC 9457 problem; some carry more members (``errors``, ``reached``, ``checks``)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str


_WHEN = {
    304: "Not modified (the ETag in If-None-Match still matches)",
    400: "A parameter, header or cursor is malformed",
    401: "No valid bearer token",
    403: "Not allowed (not the author)",
    404: "Unknown comment",
    409: "Conflicts with the comment's state or a request in flight",
    413: "The body is too large",
    422: "The body is invalid",
    429: "Too many requests (see Retry-After and RateLimit-*)",
    503: "A store does not answer or the server is overloaded (see Retry-After)",
    504: "The read models did not reach min_position in time",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """The documented problem+json answers for ``statuses``."""
    return {
        status: ResponseSpec(
            None if status == 304 else Problem,
            description=_WHEN.get(status, HTTPStatus(status).phrase),
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in statuses
    }


def response_headers(*names: str) -> list[ResponseHeader]:
    """Documented response headers (set by the handlers themselves)."""
    described = {
        "X-Tally-Position": "The position the answer reflects (use it as min_position)",
        "X-Tally-Stale": "'true' when counts come from a fallback read model, a little behind",
        "X-Tally-Degraded": "Which read model is missing from this answer",
        "ETag": "Tag of the body; send it back as If-None-Match",
        "Location": "The new resource",
        "Idempotent-Replayed": "'true' when answered from an earlier request's Idempotency-Key",
        "RateLimit-Limit": "Requests allowed per window",
        "RateLimit-Remaining": "Requests left now",
        "RateLimit-Reset": "Seconds until the quota is full again",
    }
    return [
        ResponseHeader(name=n, documentation_only=True, description=described[n]) for n in names
    ]


# Accepted (and echoed) by every route: the correlation id of the request.
REQUEST_ID = {
    "request_id": HeaderParameter(
        annotation=str,
        name="X-Request-ID",
        required=False,
        description="Correlation id, echoed back and logged (one is made when absent)",
    )
}


class StrictStructs(StructSchemaPlugin):
    """Bodies that refuse unknown fields say so: ``additionalProperties: false``."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if field_definition.type_.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        return schema


def openapi(title: str) -> OpenAPIConfig:
    """The OpenAPI document at /schema, with the bearer-token security scheme."""
    return OpenAPIConfig(
        title=title,
        version="0.2.0",
        path="/schema",
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT",
                    description="A JWT whose `sub` is the user id",
                )
            }
        ),
    )


def cors(origins: list[str]) -> CORSConfig | None:
    """CORS for the browser apps at ``origins`` (none: no CORS headers at all)."""
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "X-Tally-Min-Position",
            "X-Request-ID",
            "If-None-Match",
            "Last-Event-ID",
        ],
        expose_headers=EXPOSED_HEADERS,
        max_age=86400,  # browsers cap it lower (Chromium: 2 h); one preflight per route then
    )


def parse_origins(text: str) -> list[str]:
    """``TALLY_CORS_ORIGINS``: comma-separated origins, or ``*``."""
    return [o.strip().rstrip("/") for o in text.split(",") if o.strip()]


def options_handler(path: str, *handlers: HTTPRouteHandler) -> HTTPRouteHandler:
    """``OPTIONS`` for ``path`` with every method its ``handlers`` serve.

    Litestar's own, when several handlers share a path, lists the first one's methods only;
    register this one before them.
    """
    allowed = ", ".join(sorted({m for h in handlers for m in h.http_methods} | {"OPTIONS"}))

    @route(path, http_method=["OPTIONS"], include_in_schema=False, status_code=204)
    async def options() -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": allowed})

    return options
