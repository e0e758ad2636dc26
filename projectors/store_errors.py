"""Is a failed apply worth retrying? Outages and back-pressure are; poison is parked.

Pure: it only looks at exception types and messages.

- ``transient``: the store is down, busy, full, read-only or refusing writes for now
  (connection errors, timeouts; Redis OOM, READONLY, LOADING, BUSY, TRYAGAIN, MASTERDOWN,
  CLUSTERDOWN; Elasticsearch 429, 502, 503, 504, a blocked index). Retried with backoff: the
  event is fine, the store will be back.
- ``poison``: this event can never be applied (``CannotApply``, an undecodable event). Parked.
- ``bug``: anything else. Retried a few times, then the projector stops loudly: a bug must not
  pass for an outage, nor park every event after it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import psycopg
from elasticsearch import ApiError
from elasticsearch import ConnectionError as EsConnectionError
from elasticsearch import TransportError as EsTransportError
from redis import exceptions as redis_errors

from kernel.redis_client import CLUSTER_DOWN, closed_under_us
from projectors.base import CannotApply, StoreBusy
from schemas.codec import UnknownEventError

Kind = Literal["transient", "poison", "bug"]

# Replies a Redis server gives while it cannot take writes for now.
REDIS_BUSY_REPLIES = ("OOM", "READONLY", "LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN")
ES_TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})

_REDIS_TRANSIENT = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
    redis_errors.TryAgainError,
    redis_errors.MasterDownError,
    redis_errors.ClusterDownError,
    redis_errors.MaxConnectionsError,
    redis_errors.NoScriptError,  # a restarted Redis forgot the script: load it again
    *CLUSTER_DOWN,
)


def redis_reply_is_transient(message: str) -> bool:
    """Does a Redis error reply (maybe wrapped by a script error) mean "not now"?"""
    text = message.upper()
    return any(
        text.startswith(code) or f" {code} " in text or f"-{code}" in text
        for code in REDIS_BUSY_REPLIES
    )


def es_item_is_transient(item: dict[str, Any]) -> bool:
    """Is a bulk item's failure back-pressure or a blocked index (retry), not a bad document?"""
    status = int(item.get("status", 200))
    error = item.get("error") or {}
    kind = error.get("type", "") if isinstance(error, dict) else str(error)
    return (
        status in ES_TRANSIENT_STATUSES
        or status >= 500
        or "cluster_block_exception" in kind
        or "es_rejected_execution_exception" in kind
    )


def classify(exc: BaseException) -> Kind:
    """Which kind of failure ``exc`` is; see the module docstring."""
    if isinstance(exc, CannotApply | UnknownEventError):
        return "poison"
    if isinstance(exc, StoreBusy):
        return "transient"
    if isinstance(exc, _REDIS_TRANSIENT) or closed_under_us(exc):
        return "transient"
    if isinstance(exc, redis_errors.ResponseError):
        return "transient" if redis_reply_is_transient(str(exc)) else "bug"
    if isinstance(exc, ApiError):
        status = exc.meta.status
        text = str(exc)
        busy = status in ES_TRANSIENT_STATUSES or status >= 500 or "cluster_block" in text
        # A missing index is noticed and rebuilt by the integrity check; until then, wait.
        return "transient" if busy or "index_not_found" in text else "bug"
    if isinstance(exc, EsConnectionError | EsTransportError):
        return "transient"
    if isinstance(exc, psycopg.OperationalError | OSError | TimeoutError | asyncio.TimeoutError):
        return "transient"
    return "bug"
