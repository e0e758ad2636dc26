"""A write on a connection redis-py closed under us is Redis being away, not a bug in Tally:
projectors retry it, the rate limiter fails open, reads answer 503 (not 500)."""

from __future__ import annotations

from typing import Any

import pytest

from kernel.redis_client import closed_under_us
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
    for source in ("writer.writelines([b'PING'])", "writer()"):  # AttributeError, TypeError
        exc = raised_in(RACE, source)
        assert closed_under_us(exc), exc
        assert classify(exc) == "transient"


def test_the_same_errors_in_our_code_stay_bugs() -> None:
    exc = raised_in("/work/projectors/redis_scores.py", "writer.writelines([b'PING'])")
    assert not closed_under_us(exc)
    assert classify(exc) == "bug"
    assert not closed_under_us(ValueError("no"))
