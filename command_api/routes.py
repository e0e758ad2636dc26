"""HTTP handlers: thin, each turns a request into a command and its outcome into a response."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
import structlog
from litestar import Request, Response, delete, patch, post, put
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import FromPath, HeaderParameter, JSONBody

from command_api.answers import answer_command
from command_api.deciders.comment import DeleteComment, EditComment, PostComment
from command_api.deciders.vote import CastVote, RetractVote
from command_api.idempotency import request_fingerprint
from command_api.planning import Command
from kernel.ids import random_uuid
from kernel.web_contract import BEARER, options_handler, problems, response_headers
from schemas.api import (
    CommentChanged,
    CommentCreated,
    EditCommentBody,
    PostCommentBody,
    VoteBody,
    VoteRecorded,
)

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        pattern=r"^[\x21-\x7e]{1,255}$",
        description="1 to 255 visible ASCII characters; the same key with the same body gets "
        "the first answer again (Idempotent-Replayed: true), with another body a 422",
    ),
]
_LIMIT_HEADERS = response_headers(
    "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Idempotent-Replayed"
)


async def current_user(request: Request[Any, Any, Any]) -> str:
    """The user id from the bearer token (dependency ``user_id``)."""
    verifier = request.app.state.services.verifier
    user_id: str = await verifier.user_of(request.headers.get("authorization"))
    return user_id


async def _strictly(request: Request[Any, Any, Any], body_type: type[msgspec.Struct]) -> None:
    """Refuse a body that only litestar's lenient conversion accepts (``{"value": "1"}``): a
    number must come as a JSON number, as the vote fast lane requires."""
    try:
        msgspec.json.decode(await request.body(), type=body_type)
    except msgspec.ValidationError as exc:
        message, _, at = str(exc).partition(" - at `$.")
        key = at.rstrip("`") or "data"
        error = {"message": message, "key": key, "source": "body"}
        raise ValidationException(detail=f"{key}: {message}", extra=[error]) from None


async def _execute(
    request: Request[Any, Any, Any],
    command: Command,
    user_id: str,
    action: str,
    key: str | None,
    location: str | None = None,
) -> Response[Any]:
    """``answer_command`` for this request, as a response."""
    fingerprint = b""
    if key is not None:
        fingerprint = request_fingerprint(request.method, request.url.path, await request.body())
    correlation_id = structlog.contextvars.get_contextvars().get("correlation_id")
    answer = await answer_command(
        request.app.state.services,
        command,
        user_id,
        action,
        key,
        fingerprint,
        correlation_id,
        location,
    )
    return Response(
        answer.body,
        status_code=answer.status,
        media_type="application/json",
        headers=answer.headers,
    )


@post(
    "/api/comments",
    operation_id="post_comment",
    summary="Post a comment (or a reply with parent_id)",
    response_description="The comment was posted",
    responses={
        **problems(400, 401, 404, 409, 413, 422, 429, 503),
    },
    security=BEARER,
    response_headers=[*_LIMIT_HEADERS, *response_headers("Location")],
)
async def post_comment(
    request: Request[Any, Any, Any],
    data: JSONBody[PostCommentBody],
    user_id: NamedDependency[str],
    idempotency_key: IdempotencyKey = None,
) -> Response[CommentCreated]:
    """Post a comment on a commentable."""
    command = PostComment(
        comment_id=random_uuid(),
        commentable_id=data.commentable_id,
        author_id=user_id,
        content=data.content,
        parent_id=data.parent_id,
    )
    # The comment's URL: PATCH and DELETE here, GET on the query API.
    location = f"/api/comments/{command.comment_id}"
    return await _execute(request, command, user_id, "comment", idempotency_key, location)


@patch(
    "/api/comments/{comment_id:uuid}",
    operation_id="edit_comment",
    summary="Edit a comment (author only)",
    response_description="The comment was edited",
    responses={
        **problems(400, 401, 403, 404, 409, 413, 422, 429, 503),
    },
    security=BEARER,
    response_headers=_LIMIT_HEADERS,
)
async def edit_comment(
    request: Request[Any, Any, Any],
    comment_id: FromPath[UUID],
    data: JSONBody[EditCommentBody],
    user_id: NamedDependency[str],
    idempotency_key: IdempotencyKey = None,
) -> Response[CommentChanged]:
    """Replace a comment's content."""
    command = EditComment(comment_id=comment_id, user_id=user_id, content=data.content)
    return await _execute(request, command, user_id, "comment", idempotency_key)


@delete(
    "/api/comments/{comment_id:uuid}",
    operation_id="delete_comment",
    summary="Delete a comment (author only)",
    status_code=200,
    response_description="The comment was deleted",
    responses={
        **problems(400, 401, 403, 404, 409, 413, 422, 429, 503),
    },
    security=BEARER,
    response_headers=_LIMIT_HEADERS,
)
async def delete_comment(
    request: Request[Any, Any, Any],
    comment_id: FromPath[UUID],
    user_id: NamedDependency[str],
    idempotency_key: IdempotencyKey = None,
) -> Response[CommentChanged]:
    """Delete a comment; deleting it again changes nothing."""
    command = DeleteComment(comment_id=comment_id, user_id=user_id)
    return await _execute(request, command, user_id, "comment", idempotency_key)


@put(
    "/api/comments/{comment_id:uuid}/vote",
    operation_id="cast_vote",
    summary="Vote up (1), down (-1) or retract (0)",
    response_description="The vote as it now stands",
    responses={
        **problems(400, 401, 404, 409, 413, 422, 429, 503),
    },
    security=BEARER,
    response_headers=_LIMIT_HEADERS,
)
async def cast_vote(
    request: Request[Any, Any, Any],
    comment_id: FromPath[UUID],
    data: JSONBody[VoteBody],
    user_id: NamedDependency[str],
    idempotency_key: IdempotencyKey = None,
) -> Response[VoteRecorded]:
    """Set the caller's vote on a comment."""
    await _strictly(request, VoteBody)
    command = CastVote(comment_id=comment_id, user_id=user_id, value=data.value)
    return await _execute(request, command, user_id, "vote", idempotency_key)


@delete(
    "/api/comments/{comment_id:uuid}/vote",
    operation_id="retract_vote",
    summary="Retract the caller's vote",
    status_code=200,
    response_description="The vote as it now stands",
    responses={
        **problems(400, 401, 404, 409, 413, 422, 429, 503),
    },
    security=BEARER,
    response_headers=_LIMIT_HEADERS,
)
async def retract_vote(
    request: Request[Any, Any, Any],
    comment_id: FromPath[UUID],
    user_id: NamedDependency[str],
    idempotency_key: IdempotencyKey = None,
) -> Response[VoteRecorded]:
    """Retract the caller's vote on a comment."""
    command = RetractVote(comment_id=comment_id, user_id=user_id)
    return await _execute(request, command, user_id, "vote", idempotency_key)


ROUTES = [
    options_handler("/api/comments/{comment_id:uuid}", edit_comment, delete_comment),
    options_handler("/api/comments/{comment_id:uuid}/vote", cast_vote, retract_vote),
    post_comment,
    edit_comment,
    delete_comment,
    cast_vote,
    retract_vote,
]
