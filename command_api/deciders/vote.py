"""The vote decider: one vote per user per comment, cast, changed or retracted."""

from __future__ import annotations

from uuid import UUID

import msgspec

from command_api.deciders.comment import CommentState
from command_api.deciders.errors import CommentIsDeleted, CommentNotFound
from schemas.events import VoteCast, VoteChanged, VoteEvent, VoteRetracted, VoteValue


class CastVote(msgspec.Struct, frozen=True, kw_only=True):
    """Set the user's vote to ``value``; 0 retracts."""

    comment_id: UUID
    user_id: str
    value: VoteValue


class RetractVote(msgspec.Struct, frozen=True, kw_only=True):
    comment_id: UUID
    user_id: str


VoteCommand = CastVote | RetractVote


class VoteState(msgspec.Struct, frozen=True, kw_only=True):
    """The (comment, user) vote stream, plus what the vote needs to know of the comment."""

    comment: CommentState
    value: VoteValue = 0
    version: int = 0


def initial_state(comment: CommentState) -> VoteState:
    """The state of a vote stream nobody has written to yet."""
    return VoteState(comment=comment)


def decide(command: VoteCommand, state: VoteState) -> list[VoteEvent]:
    """Events for ``command``; ``[]`` when the vote already has that value."""
    comment = state.comment
    if not comment.exists:
        raise CommentNotFound(f"comment {command.comment_id} not found")
    if comment.deleted:
        raise CommentIsDeleted(f"comment {command.comment_id} is deleted")
    new: VoteValue = command.value if isinstance(command, CastVote) else 0
    if new == state.value:
        return []
    kind: type[VoteCast | VoteChanged | VoteRetracted]
    if state.value == 0:
        kind = VoteCast
    elif new == 0:
        kind = VoteRetracted
    else:
        kind = VoteChanged
    return [
        kind(
            comment_id=command.comment_id,
            commentable_id=comment.commentable_id,
            parent_id=comment.parent_id,
            comment_author_id=comment.author_id,
            user_id=command.user_id,
            value=new,
            previous=state.value,
        )
    ]


def evolve(state: VoteState, event: VoteEvent) -> VoteState:
    """The vote stream's state after ``event``."""
    return msgspec.structs.replace(state, value=event.value, version=state.version + 1)
