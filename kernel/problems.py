"""RFC 9457 ``application/problem+json`` for every HTTP app: the shared, generic part."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, NamedTuple

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


class Problem(NamedTuple):
    """A problem answer before any framework turns it into a response."""

    status: int
    body: bytes
    headers: dict[str, str] | None

    def response(self) -> Response[bytes]:
        """The answer as a litestar response."""
        return Response(
            self.body, status_code=self.status, media_type=PROBLEM_JSON, headers=self.headers
        )


def problem_of(
    status: int,
    code: str,
    title: str,
    detail: str,
    instance: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Problem:
    """A problem+json answer, logged with the request's correlation id (never a token);
    ``.response()`` makes it a litestar response."""
    (log.warning if status >= 500 else log.info)(
        "request_failed", status=status, problem=code, detail=detail, path=instance
    )
    body = {
        "type": f"urn:tally:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    return Problem(status, msgspec.json.encode(body), headers)


def unexpected_problem(instance: str) -> Problem:
    """The answer to an error nobody expected: logged with its traceback, never leaked."""
    log.exception("unhandled_error", path=instance)
    return problem_of(
        500, "internal-error", "Internal error", "an unexpected error occurred", instance
    )


def framework_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Validation errors, HTTP errors and anything unexpected (logged, never leaked)."""
    path = request.url.path
    if isinstance(exc, UnicodeDecodeError | RecursionError):  # a body no JSON parser can take
        detail = (
            "the body is not valid UTF-8"
            if isinstance(exc, UnicodeDecodeError)
            else ("the body nests too deeply")
        )
        return problem_of(400, "malformed-body", "Bad Request", detail, path).response()
    if isinstance(exc, ValidationException):
        errors = exc.extra if isinstance(exc.extra, list) else []
        from_body = any(isinstance(e, dict) and e.get("source") == "body" for e in errors)
        status = 422 if from_body else 400
        detail = "; ".join(f"{e.get('key')}: {e.get('message')}" for e in errors) or exc.detail
        if any(e.get("key") == "data" and e.get("message") == "'data'" for e in errors):
            detail = "a JSON body is required"
        return problem_of(
            status, "validation-failed", "Invalid request", detail, path, errors=errors
        ).response()
    if isinstance(exc, HTTPException):
        code = "malformed-body" if exc.status_code == 400 else f"http-{exc.status_code}"
        detail = exc.detail
        if exc.status_code == 413:
            detail = "the request body is larger than this API accepts"
        title = HTTPStatus(exc.status_code).phrase
        return problem_of(exc.status_code, code, title, detail, path, exc.headers).response()
    return unexpected_problem(path).response()
