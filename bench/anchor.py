"""The ``eventsourcing`` library (the ``bench`` extra) appending vote aggregates to PostgreSQL.

The anchor of ``bench.compare``'s write figure: the same PostgreSQL as Tally, no HTTP, each
vote a new aggregate whose creation event the library's recorder inserts and commits.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import Any
from uuid import uuid4

import psycopg


@functools.cache  # the library registers each class once, by its name
def _vote_aggregate() -> Any:
    from eventsourcing.domain import Aggregate, event

    class Vote(Aggregate):
        @event("Cast")
        def __init__(self, comment_id: str, user_id: str, value: int) -> None:
            self.comment_id = comment_id
            self.user_id = user_id
            self.value = value

    return Vote


def _application(dsn: str, threads: int) -> Any:
    from eventsourcing.application import Application

    info = psycopg.conninfo.conninfo_to_dict(dsn)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(info["dbname"]),
        "POSTGRES_HOST": str(info.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(info.get("port", 5432)),
        "POSTGRES_USER": str(info.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(info.get("password", "")) or "unused",
        "POSTGRES_POOL_SIZE": str(threads),
        "CREATE_TABLE": "y",
    }
    return Application(env={**os.environ, **env})


def eventsourcing_appends(dsn: str, threads: int, seconds: float) -> dict[str, Any]:
    """Events/s appended by ``threads`` threads for ``seconds`` (after a short warm-up)."""
    vote = _vote_aggregate()
    app = _application(dsn, threads)
    counts = [0] * threads
    stop_at = time.perf_counter() + 1 + seconds
    measure_from = stop_at - seconds

    def appender(n: int) -> None:
        while (now := time.perf_counter()) < stop_at:
            app.save(vote(str(uuid4()), f"user-{n}", 1))
            if now >= measure_from:
                counts[n] += 1

    workers = [threading.Thread(target=appender, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    app.close()
    return {"threads": threads, "events_per_second": round(sum(counts) / seconds, 1)}
