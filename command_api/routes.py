"""HTTP handlers: thin, each turns a request into a command and its outcome into a response."""

from __future__ import annotations

import re
import uuid
from typing import Any
from uuid import UUID

import msgspec
import structlog
from litestar import Request, Response, delete, patch, post, put
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from command_api.deciders.comment import DeleteComment, EditComment, PostComment
from command_api.deciders.vote import CastVote, RetractVote
from command_api.idempotency import request_fingerprint
from command_api.planning import Command
from command_api.problems import InvalidHeader
from command_api.work import WorkItem
from event_store.port import Origin
from kernel import tracing
from schemas.api import (
    CommentChanged,
    CommentCreated,
    EditCommentBody,
    PostCommentBody,
    VoteBody,
    VoteRecorded,
)

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


async def current_user(request: Request[Any, Any, Any]) -> str:
    """The user id from the bearer token (dependency ``user_id``)."""
    user_id: str = await request.app.state.verifier.user_of(request.headers.get("authorization"))
    return user_id


async def _execute(
    request: Request[Any, Any, Any], command: Command, user_id: str, action: str
) -> Response[bytes]:
    """Check the user's ``action`` limit, run ``command``, and answer with its outcome."""
    key = request.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise InvalidHeader("Idempotency-Key must be 1 to 255 visible ASCII characters")
    limiter = request.app.state.rate_limiter
    quota = await limiter.check(user_id, action)
    fingerprint = b""
    if key is not None:
        fingerprint = request_fingerprint(request.method, request.url.path, await request.body())
    correlation_id = structlog.contextvars.get_contextvars().get("correlation_id")

    def work(traceparent: str | None = None) -> WorkItem:
        origin = Origin(correlation_id=correlation_id, traceparent=traceparent)
        return WorkItem(
            command=command,
            user_id=user_id,
            idempotency_key=key,
            request_hash=fingerprint,
            origin=origin,
        )

    submit = request.app.state.submit
    tracer = tracing.tracer()
    if tracer is None:
        outcome = await submit(work())
    else:
        with tracer.start_as_current_span(
            f"append {type(command).__name__}",
            attributes={"tally.user_id": user_id},
            set_status_on_exception=False,  # a domain error is an answer, not a failure
        ) as span:
            # The append's context goes into the events' metadata for the relay to continue.
            outcome = await submit(work(tracing.current_traceparent()))
            if isinstance(outcome, Exception):
                span.set_attribute("tally.outcome", type(outcome).__name__)
    if isinstance(outcome, Exception):
        raise outcome
    if outcome.replayed:
        await limiter.refund(user_id, action)  # a replay does nothing: it is not counted
        if quota is not None:
            quota = msgspec.structs.replace(quota, remaining=min(quota.limit, quota.remaining + 1))
    headers = quota.headers() if quota is not None else {}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        outcome.body, status_code=outcome.status, media_type="application/json", headers=headers
    )


@post(
    "/api/comments",
    operation_id="post_comment",
    summary="Post a comment (or a reply with parent_id)",
    responses={201: ResponseSpec(CommentCreated, description="The comment was posted")},
)
async def post_comment(
    request: Request[Any, Any, Any], data: JSONBody[PostCommentBody], user_id: NamedDependency[str]
) -> Response[bytes]:
    """Post a comment on a commentable."""
    command = PostComment(
        comment_id=uuid.uuid4(),
        commentable_id=data.commentable_id,
        author_id=user_id,
        content=data.content,
        parent_id=data.parent_id,
    )
    return await _execute(request, command, user_id, "comment")


@patch(
    "/api/comments/{comment_id:uuid}",
    operation_id="edit_comment",
    summary="Edit a comment (author only)",
    responses={200: ResponseSpec(CommentChanged, description="The comment was edited")},
)
async def edit_comment(
    request: Request[Any, Any, Any],
    comment_id: FromPath[UUID],
    data: JSONBody[EditCommentBody],
    user_id: NamedDependency[str],
) -> Response[bytes]:
    """Replace a comment's content."""
    command = EditComment(comment_id=comment_id, user_id=user_id, content=data.content)
    return await _execute(request, command, user_id, "comment")


@delete(
    "/api/comments/{comment_id:uuid}",
    operation_id="delete_comment",
    summary="Delete a comment (author only)",
    status_code=200,
    responses={200: ResponseSpec(CommentChanged, description="The comment was deleted")},
)
async def delete_comment(
    request: Request[Any, Any, Any], comment_id: FromPath[UUID], user_id: NamedDependency[str]
) -> Response[bytes]:
    """Delete a comment; deleting it again changes nothing."""
    command = DeleteComment(comment_id=comment_id, user_id=user_id)
    return await _execute(request, command, user_id, "comment")


@put(
    "/api/comments/{comment_id:uuid}/vote",
    operation_id="cast_vote",
    summary="Vote up (1), down (-1) or retract (0)",
    responses={200: ResponseSpec(VoteRecorded, description="The vote as it now stands")},
)
async def cast_vote(
    request: Request[Any, Any, Any],
    comment_id: FromPath[UUID],
    data: JSONBody[VoteBody],
    user_id: NamedDependency[str],
) -> Response[bytes]:
    """Set the caller's vote on a comment."""
    command = CastVote(comment_id=comment_id, user_id=user_id, value=data.value)
    return await _execute(request, command, user_id, "vote")


@delete(
    "/api/comments/{comment_id:uuid}/vote",
    operation_id="retract_vote",
    summary="Retract the caller's vote",
    status_code=200,
    responses={200: ResponseSpec(VoteRecorded, description="The vote as it now stands")},
)
async def retract_vote(
    request: Request[Any, Any, Any], comment_id: FromPath[UUID], user_id: NamedDependency[str]
) -> Response[bytes]:
    """Retract the caller's vote on a comment."""
    command = RetractVote(comment_id=comment_id, user_id=user_id)
    return await _execute(request, command, user_id, "vote")


ROUTES = [post_comment, edit_comment, delete_comment, cast_vote, retract_vote]
