"""One place that turns every error into an RFC 9457 ``application/problem+json`` response."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from command_api.auth import NotAuthenticated
from command_api.deciders.errors import (
    CommentAlreadyExists,
    CommentIsDeleted,
    CommentNotFound,
    DomainError,
    NotTheAuthor,
    ParentNotFound,
)
from command_api.executor import StoreUnavailable
from command_api.idempotency import IdempotencyKeyInFlight, IdempotencyKeyReused
from command_api.rate_limit import RateLimited
from event_store.errors import ConcurrencyError

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"

_DOMAIN_STATUS: dict[type[DomainError], int] = {
    CommentNotFound: 404,
    CommentIsDeleted: 409,
    NotTheAuthor: 403,
    ParentNotFound: 422,
    CommentAlreadyExists: 409,
}


class InvalidHeader(Exception):
    """A request header has a value we cannot accept."""


# (status, code, title) for our own errors outside the domain.
_KNOWN: dict[type[Exception], tuple[int, str, str]] = {
    NotAuthenticated: (401, "unauthenticated", "Authentication required"),
    RateLimited: (429, "rate-limited", "Too many requests"),
    IdempotencyKeyInFlight: (409, "idempotency-key-in-flight", "Request already in progress"),
    IdempotencyKeyReused: (422, "idempotency-key-reused", "Idempotency key reused"),
    ConcurrencyError: (409, "concurrent-modification", "Concurrent modification"),
    StoreUnavailable: (503, "store-unavailable", "Service unavailable"),
    InvalidHeader: (400, "invalid-header", "Invalid header"),
}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[bytes]:
    """A problem+json response."""
    body = {
        "type": f"urn:tally:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    return Response(
        msgspec.json.encode(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def exception_to_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """The litestar exception handler for every exception."""
    path = request.url.path
    if isinstance(exc, DomainError):
        status = _DOMAIN_STATUS.get(type(exc), 422)
        return problem(status, exc.code, _title(exc.code), str(exc), path)
    known = _KNOWN.get(type(exc))
    if known is not None:
        status, code, title = known
        headers = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
        elif isinstance(exc, NotAuthenticated):
            headers = {"WWW-Authenticate": 'Bearer realm="tally"'}
        return problem(status, code, title, str(exc), path, headers)
    if isinstance(exc, ValidationException):
        errors = exc.extra if isinstance(exc.extra, list) else []
        from_body = any(isinstance(e, dict) and e.get("source") == "body" for e in errors)
        status = 422 if from_body else 400
        detail = "; ".join(f"{e.get('key')}: {e.get('message')}" for e in errors) or exc.detail
        return problem(status, "validation-failed", "Invalid request", detail, path, errors=errors)
    if isinstance(exc, HTTPException):
        code = "malformed-body" if exc.status_code == 400 else f"http-{exc.status_code}"
        detail = exc.detail
        if exc.status_code == 413:
            detail = "the request body is larger than this API accepts"
        title = HTTPStatus(exc.status_code).phrase
        return problem(exc.status_code, code, title, detail, path, exc.headers)
    log.exception("unhandled_error", path=path)
    return problem(500, "internal-error", "Internal error", "an unexpected error occurred", path)


def _title(code: str) -> str:
    return code.replace("-", " ").capitalize()
