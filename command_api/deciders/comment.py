"""The comment decider: post, edit and delete; only the author may edit or delete."""

from __future__ import annotations

from uuid import UUID

import msgspec

from command_api.deciders.errors import (
    CommentAlreadyExists,
    CommentIsDeleted,
    CommentNotFound,
    NotTheAuthor,
    ParentNotFound,
)
from schemas.events import CommentDeleted, CommentEdited, CommentEvent, CommentPosted


class PostComment(msgspec.Struct, frozen=True, kw_only=True):
    comment_id: UUID
    commentable_id: str
    author_id: str
    content: str
    parent_id: UUID | None = None


class EditComment(msgspec.Struct, frozen=True, kw_only=True):
    comment_id: UUID
    user_id: str
    content: str


class DeleteComment(msgspec.Struct, frozen=True, kw_only=True):
    comment_id: UUID
    user_id: str


CommentCommand = PostComment | EditComment | DeleteComment


class CommentState(msgspec.Struct, frozen=True, kw_only=True):
    exists: bool = False
    commentable_id: str = ""
    author_id: str = ""
    content: str = ""
    deleted: bool = False
    version: int = 0
    parent_id: UUID | None = None
    depth: int = 0


initial_state = CommentState()


def check_parent(command: PostComment, parent: CommentState | None) -> None:
    """A reply needs a live parent in the same commentable."""
    if command.parent_id is None:
        return
    if parent is None or not parent.exists or parent.commentable_id != command.commentable_id:
        raise ParentNotFound(f"parent comment {command.parent_id} not found in this commentable")
    if parent.deleted:
        raise CommentIsDeleted(f"parent comment {command.parent_id} is deleted")


def decide(
    command: CommentCommand, state: CommentState, parent: CommentState | None = None
) -> list[CommentEvent]:
    """Events that carry out ``command`` on a comment in ``state`` (``parent``: the state of
    the comment a new reply answers); ``[]`` when nothing changes."""
    match command:
        case PostComment():
            if state.exists:
                raise CommentAlreadyExists(f"comment {command.comment_id} already exists")
            check_parent(command, parent)
            return [
                CommentPosted(
                    comment_id=command.comment_id,
                    commentable_id=command.commentable_id,
                    author_id=command.author_id,
                    content=command.content,
                    parent_id=command.parent_id,
                    depth=parent.depth + 1 if command.parent_id and parent else 0,
                )
            ]
        case EditComment():
            _require_author_of_live_comment(state, command.comment_id, command.user_id)
            if command.content == state.content:
                return []
            return [
                CommentEdited(
                    comment_id=command.comment_id,
                    commentable_id=state.commentable_id,
                    parent_id=state.parent_id,
                    author_id=state.author_id,
                    content=command.content,
                )
            ]
        case DeleteComment():
            if state.exists and state.deleted and state.author_id == command.user_id:
                return []
            _require_author_of_live_comment(state, command.comment_id, command.user_id)
            return [
                CommentDeleted(
                    comment_id=command.comment_id,
                    commentable_id=state.commentable_id,
                    parent_id=state.parent_id,
                    author_id=state.author_id,
                )
            ]


def evolve(state: CommentState, event: CommentEvent) -> CommentState:
    """The comment's state after ``event``."""
    version = state.version + 1
    match event:
        case CommentPosted():
            return CommentState(
                exists=True,
                commentable_id=event.commentable_id,
                author_id=event.author_id,
                content=event.content,
                version=version,
                parent_id=event.parent_id,
                depth=event.depth,
            )
        case CommentEdited():
            return msgspec.structs.replace(state, content=event.content, version=version)
        case CommentDeleted():
            return msgspec.structs.replace(state, deleted=True, version=version)


def _require_author_of_live_comment(state: CommentState, comment_id: UUID, user_id: str) -> None:
    if not state.exists:
        raise CommentNotFound(f"comment {comment_id} not found")
    if state.deleted:
        raise CommentIsDeleted(f"comment {comment_id} is deleted")
    if state.author_id != user_id:
        raise NotTheAuthor(f"only the author may change comment {comment_id}")
