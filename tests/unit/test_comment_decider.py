"""The comment decider, as Given events / When command / Then events."""

from uuid import uuid4

import pytest

from command_api.deciders.comment import (
    CommentState,
    DeleteComment,
    EditComment,
    PostComment,
    check_parent,
    decide,
    evolve,
    initial_state,
)
from command_api.deciders.errors import (
    CommentAlreadyExists,
    CommentIsDeleted,
    CommentNotFound,
    NotTheAuthor,
    ParentNotFound,
)
from schemas.events import CommentDeleted, CommentEdited, CommentEvent, CommentPosted

CID = uuid4()
POSTED = CommentPosted(comment_id=CID, commentable_id="post-1", author_id="alice", content="hi")


def given(*events: CommentEvent) -> CommentState:
    state = initial_state
    for event in events:
        state = evolve(state, event)
    return state


def test_posting_a_comment_records_who_wrote_what_where() -> None:
    command = PostComment(comment_id=CID, commentable_id="post-1", author_id="alice", content="hi")
    assert decide(command, given()) == [POSTED]


def test_a_comment_cannot_be_posted_twice() -> None:
    command = PostComment(comment_id=CID, commentable_id="post-1", author_id="alice", content="hi")
    with pytest.raises(CommentAlreadyExists):
        decide(command, given(POSTED))


def test_the_author_can_edit_and_the_state_follows() -> None:
    events = decide(EditComment(comment_id=CID, user_id="alice", content="bye"), given(POSTED))
    assert events == [
        CommentEdited(comment_id=CID, commentable_id="post-1", author_id="alice", content="bye")
    ]
    assert given(POSTED, *events).content == "bye"
    assert given(POSTED, *events).version == 2


def test_editing_to_the_same_content_appends_nothing() -> None:
    assert decide(EditComment(comment_id=CID, user_id="alice", content="hi"), given(POSTED)) == []


@pytest.mark.parametrize(
    "command",
    [
        EditComment(comment_id=CID, user_id="mallory", content="x"),
        DeleteComment(comment_id=CID, user_id="mallory"),
    ],
)
def test_only_the_author_may_edit_or_delete(command: EditComment | DeleteComment) -> None:
    with pytest.raises(NotTheAuthor):
        decide(command, given(POSTED))


def test_a_deleted_comment_cannot_be_edited() -> None:
    deleted = CommentDeleted(comment_id=CID, commentable_id="post-1", author_id="alice")
    with pytest.raises(CommentIsDeleted):
        decide(EditComment(comment_id=CID, user_id="alice", content="x"), given(POSTED, deleted))


def test_deleting_twice_appends_nothing_the_second_time() -> None:
    first = decide(DeleteComment(comment_id=CID, user_id="alice"), given(POSTED))
    assert first == [CommentDeleted(comment_id=CID, commentable_id="post-1", author_id="alice")]
    assert decide(DeleteComment(comment_id=CID, user_id="alice"), given(POSTED, *first)) == []


def test_an_unknown_comment_is_not_found() -> None:
    with pytest.raises(CommentNotFound):
        decide(DeleteComment(comment_id=CID, user_id="alice"), given())


def test_a_reply_needs_a_live_parent_in_the_same_commentable() -> None:
    reply = PostComment(
        comment_id=uuid4(), commentable_id="post-1", author_id="bob", content="re", parent_id=CID
    )
    check_parent(reply, given(POSTED))
    with pytest.raises(ParentNotFound):
        check_parent(reply, None)
    elsewhere = CommentPosted(comment_id=CID, commentable_id="post-2", author_id="a", content="x")
    with pytest.raises(ParentNotFound):
        check_parent(reply, given(elsewhere))
    deleted = CommentDeleted(comment_id=CID, commentable_id="post-1", author_id="alice")
    with pytest.raises(CommentIsDeleted):
        check_parent(reply, given(POSTED, deleted))
