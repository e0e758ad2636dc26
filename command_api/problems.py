"""One place that turns every error into an RFC 9457 ``application/problem+json`` response."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response

from command_api.deciders.errors import (
    CommentAlreadyExists,
    CommentIsDeleted,
    CommentNotFound,
    DomainError,
    NotTheAuthor,
    ParentNotFound,
)
from command_api.group_commit import CommandTimedOut, Overloaded
from command_api.idempotency import IdempotencyKeyInFlight, IdempotencyKeyReused
from command_api.rate_limit import RateLimited
from event_store.errors import ConcurrencyError, StoreUnavailable
from kernel.auth import NotAuthenticated
from kernel.problems import Problem, framework_problem, problem_of

_DOMAIN_STATUS: dict[type[DomainError], int] = {
    CommentNotFound: 404,
    CommentIsDeleted: 409,
    NotTheAuthor: 403,
    ParentNotFound: 404,  # the comment it answers does not exist (here)
    CommentAlreadyExists: 409,
}


# (status, code, title) for our own errors outside the domain.
_KNOWN: dict[type[Exception], tuple[int, str, str]] = {
    NotAuthenticated: (401, "unauthenticated", "Authentication required"),
    RateLimited: (429, "rate-limited", "Too many requests"),
    IdempotencyKeyInFlight: (409, "idempotency-key-in-flight", "Request already in progress"),
    IdempotencyKeyReused: (422, "idempotency-key-reused", "Idempotency key reused"),
    ConcurrencyError: (409, "concurrent-modification", "Concurrent modification"),
    StoreUnavailable: (503, "store-unavailable", "Service unavailable"),
    Overloaded: (503, "overloaded", "Service overloaded"),
    CommandTimedOut: (503, "command-timed-out", "No outcome in time"),
}


def command_problem(exc: Exception, path: str) -> Problem | None:
    """The answer to one of the command side's own errors; ``None`` for any other."""
    if isinstance(exc, DomainError):
        status = _DOMAIN_STATUS.get(type(exc), 422)
        return problem_of(status, exc.code, _title(exc.code), str(exc), path)
    known = _KNOWN.get(type(exc))
    if known is None:
        return None
    status, code, title = known
    headers = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after), **exc.quota.headers()}
    elif isinstance(exc, Overloaded):
        headers = {"Retry-After": str(exc.retry_after)}
    elif status == 503:
        headers = {"Retry-After": "1"}
    elif isinstance(exc, NotAuthenticated):
        headers = {"WWW-Authenticate": 'Bearer realm="tally"'}
    return problem_of(status, code, title, str(exc), path, headers)


def exception_to_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """The litestar exception handler for every exception."""
    known = command_problem(exc, request.url.path)
    return known.response() if known is not None else framework_problem(request, exc)


def _title(code: str) -> str:
    return code.replace("-", " ").capitalize()
