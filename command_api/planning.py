"""Plan a batch of commands against loaded state: pure, no I/O.

Commands of one batch are decided in order, each on the state left by the ones before it, so
two commands on the same stream in one batch chain correctly. A domain error fails only its
own command.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from command_api.deciders import comment, vote
from command_api.deciders.comment import (
    CommentCommand,
    CommentState,
    DeleteComment,
    EditComment,
    PostComment,
)
from command_api.deciders.errors import DomainError
from command_api.deciders.vote import CastVote, RetractVote, VoteCommand, VoteState
from event_store.port import NO_ORIGIN, Origin, PendingEvent, stream_of_comment, stream_of_vote
from schemas.api import CommentChanged, CommentCreated, Reply, VoteRecorded
from schemas.events import CommentEvent, VoteEvent

Command = CommentCommand | VoteCommand
VoteKey = tuple[UUID, str]


class CommandPlan(msgspec.Struct, kw_only=True):
    """What one command does: its events, and the reply before positions are known.

    ``stream`` is the stream it decided on: a command that appends nothing answers with the
    position of that stream's latest event.
    """

    stream: str
    events: list[PendingEvent]
    reply: Reply


class BatchPlan(msgspec.Struct, kw_only=True):
    """The whole batch: one plan or domain error per command, and the state to save."""

    outcomes: list[CommandPlan | DomainError]
    comments: dict[UUID, CommentState]
    votes: dict[VoteKey, VoteState]


def plan_batch(
    commands: list[Command],
    comments: dict[UUID, CommentState],
    votes: dict[VoteKey, tuple[int, int]],
    now: datetime,
    origins: list[Origin] | None = None,
) -> BatchPlan:
    """Decide every command in order on the loaded state.

    ``comments`` holds every loaded comment; ``votes`` maps (comment, user) to the stored
    (value, version); a stream missing from it has never been written. ``origins`` (one per
    command) goes into the metadata of each command's events.
    """
    comment_state = dict(comments)
    vote_state: dict[VoteKey, VoteState] = {}
    changed_comments: dict[UUID, CommentState] = {}
    outcomes: list[CommandPlan | DomainError] = []
    for index, command in enumerate(commands):
        origin = origins[index] if origins else NO_ORIGIN
        try:
            match command:
                case PostComment() | EditComment() | DeleteComment():
                    plan, state = _plan_comment(command, comment_state, now, origin)
                    if plan.events:
                        comment_state[command.comment_id] = state
                        changed_comments[command.comment_id] = state
                case CastVote() | RetractVote():
                    key = (command.comment_id, command.user_id)
                    target = comment_state.get(command.comment_id)
                    current = vote_state.get(key) or _loaded_vote(votes.get(key), target)
                    # The comment as the batch left it: deleted by an earlier command, say.
                    current = msgspec.structs.replace(
                        current, comment=target or comment.initial_state
                    )
                    plan, new_vote = _plan_vote(command, current, origin)
                    vote_state[key] = new_vote
        except DomainError as error:
            outcomes.append(error)
            continue
        outcomes.append(plan)
    changed_votes = {
        key: state
        for key, state in vote_state.items()
        if votes.get(key, (0, 0))[1] != state.version
    }
    return BatchPlan(outcomes=outcomes, comments=changed_comments, votes=changed_votes)


def _loaded_vote(row: tuple[int, int] | None, target: CommentState | None) -> VoteState:
    value, version = row or (0, 0)
    state = vote.initial_state(target or comment.initial_state)
    return msgspec.structs.replace(state, value=value, version=version)


def _plan_comment(
    command: CommentCommand,
    states: dict[UUID, CommentState],
    now: datetime,
    origin: Origin,
) -> tuple[CommandPlan, CommentState]:
    state = states.get(command.comment_id, comment.initial_state)
    parent = None
    if isinstance(command, PostComment) and command.parent_id:
        parent = states.get(command.parent_id)
    events: list[CommentEvent] = comment.decide(command, state, parent)
    new_state = state
    for event in events:
        new_state = comment.evolve(new_state, event)
    stream = stream_of_comment(command.comment_id)
    pending = _pending(stream, state.version, events, origin)
    reply: Reply
    if isinstance(command, PostComment):
        reply = CommentCreated(id=command.comment_id, created_at=now, position=0)
    else:
        reply = CommentChanged(id=command.comment_id, position=0)
    return CommandPlan(stream=stream, events=pending, reply=reply), new_state


def _plan_vote(
    command: VoteCommand, state: VoteState, origin: Origin
) -> tuple[CommandPlan, VoteState]:
    events: list[VoteEvent] = vote.decide(command, state)
    new_state = state
    for event in events:
        new_state = vote.evolve(new_state, event)
    stream = stream_of_vote(command.comment_id, command.user_id)
    reply = VoteRecorded(
        comment_id=command.comment_id, value=new_state.value, previous=state.value, position=0
    )
    plan = CommandPlan(
        stream=stream, events=_pending(stream, state.version, events, origin), reply=reply
    )
    return plan, new_state


def _pending(
    stream: str,
    version: int,
    events: list[CommentEvent] | list[VoteEvent],
    origin: Origin,
) -> list[PendingEvent]:
    return [
        PendingEvent(
            stream_id=stream,
            stream_version=version + n,
            event=e,
            correlation_id=origin.correlation_id,
            traceparent=origin.traceparent,
        )
        for n, e in enumerate(events, start=1)
    ]
