"""Transient store errors are retried, only poison is parked, anything else is a bug."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError, ConnectionTimeout
from elasticsearch import ConnectionError as EsConnectionError
from redis import exceptions as redis_errors

from projectors.base import CannotApply, StoreBusy
from projectors.store_errors import classify, es_item_is_transient, redis_reply_is_transient
from schemas.codec import UnknownEventError
from schemas.envelope import Envelope
from schemas.events import VoteCast


def _es_error(status: int, body: str) -> ApiError:
    meta = ApiResponseMeta(
        status=status,
        http_version="1.1",
        headers=HttpHeaders(),
        duration=0.0,
        node=NodeConfig("http", "localhost", 9200),
    )
    return ApiError(body, meta, body)


def _envelope() -> Envelope:
    vote = VoteCast(comment_id=uuid.uuid4(), commentable_id="p", user_id="u", value=1, previous=0)
    return Envelope(
        event_id=uuid.uuid4(),
        stream_id="s",
        stream_version=1,
        position=1,
        occurred_at=datetime.now(UTC),
        event=vote,
    )


@pytest.mark.parametrize(
    "error",
    [
        redis_errors.ConnectionError("refused"),
        redis_errors.TimeoutError("timed out"),
        redis_errors.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
        redis_errors.ReadOnlyError("You can't write against a read only replica."),
        redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
        redis_errors.TryAgainError("Multiple keys request during rehashing of slot"),
        redis_errors.MasterDownError("Link with MASTER is down"),
        redis_errors.ResponseError("BUSY Redis is busy running a script."),
        StoreBusy("elasticsearch said 429"),
        _es_error(429, "es_rejected_execution_exception"),
        _es_error(503, "unavailable"),
        _es_error(403, "cluster_block_exception: index [x] blocked by: [FORBIDDEN/8/index write]"),
        _es_error(404, "index_not_found_exception"),
        EsConnectionError("refused"),
        ConnectionTimeout("timed out"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        TimeoutError(),
        OSError("network is unreachable"),
    ],
)
def test_outages_and_back_pressure_are_retried(error: BaseException) -> None:
    assert classify(error) == "transient"


def test_an_event_that_can_never_apply_is_poison() -> None:
    assert classify(CannotApply(_envelope(), "mapper_parsing_exception")) == "poison"
    assert classify(UnknownEventError("VoteExploded v1")) == "poison"


@pytest.mark.parametrize(
    "error",
    [
        KeyError("up"),
        TypeError("unsupported operand"),
        redis_errors.ResponseError("ERR wrong number of arguments"),
        _es_error(400, "mapper_parsing_exception"),
    ],
)
def test_anything_else_is_a_bug_not_an_outage(error: BaseException) -> None:
    assert classify(error) == "bug"


def test_redis_replies_are_read_with_or_without_a_script_around_them() -> None:
    assert redis_reply_is_transient("OOM command not allowed when used memory > 'maxmemory'")
    assert redis_reply_is_transient("ERR Error running script: -READONLY You can't write")
    assert not redis_reply_is_transient("ERR user_script:12: attempt to compare nil")


def test_bulk_items_tell_a_blocked_index_from_a_bad_document() -> None:
    assert es_item_is_transient({"status": 429, "error": {"type": "rejected"}})
    assert es_item_is_transient(
        {"status": 403, "error": {"type": "cluster_block_exception", "reason": "blocked"}}
    )
    assert not es_item_is_transient({"status": 400, "error": {"type": "mapper_parsing_exception"}})
