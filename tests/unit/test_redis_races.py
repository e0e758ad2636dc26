"""A write on a connection redis-py closed under us is Redis being away, not a bug in Tally:
projectors retry it, the rate limiter fails open, reads answer 503 (not 500)."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ClusterDownError, ConnectionError

from kernel.redis_client import closed_under_us, redis_away
from projectors.store_errors import classify


def raised_in(filename: str, source: str) -> BaseException:
    """The exception ``source`` raises, as if it ran in ``filename``."""
    namespace: dict[str, Any] = {}
    exec(compile(f"def write(writer):\n    {source}\n", filename, "exec"), namespace)
    with pytest.raises(Exception) as caught:
        namespace["write"](None)
    return caught.value


RACE = "/venv/lib/python3.11/site-packages/redis/asyncio/connection.py"


def test_a_closed_writer_inside_redis_py_is_a_lost_connection() -> None:
    uvloop = "raise RuntimeError('unable to perform operation on <TCPTransport closed=True>')"
    for source in ("writer.writelines([b'PING'])", "writer()", uvloop):
        exc = raised_in(RACE, source)
        assert closed_under_us(exc), exc
        assert classify(exc) == "transient"


def test_the_same_errors_in_our_code_stay_bugs() -> None:
    exc = raised_in("/work/projectors/redis_scores.py", "writer.writelines([b'PING'])")
    assert not closed_under_us(exc)
    assert classify(exc) == "bug"
    assert not closed_under_us(ValueError("no"))
    assert classify(raised_in("/work/projectors/runner.py", "raise RuntimeError('no')")) == "bug"


def test_redis_away_covers_outages_and_races_but_not_bugs() -> None:
    for exc in (ConnectionError("refused"), ClusterDownError("down"), raised_in(RACE, "writer()")):
        assert redis_away(exc), exc
    assert not redis_away(raised_in("/work/query_api/live_hub.py", "writer()"))
    assert not redis_away(ValueError("no"))
