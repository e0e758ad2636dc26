"""The query API's ``since``/``until``: exactly RFC 3339 date-times, as the schema says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.api import parse_timestamp

ZONES = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-23 * 60 - 59, 23 * 60 + 59)
)


@given(st.datetimes(timezones=ZONES))
def test_every_aware_time_reads_back_as_the_same_instant(moment: datetime) -> None:
    assert parse_timestamp(moment.isoformat()) == moment
    assert parse_timestamp(moment.isoformat().replace("+00:00", "Z").lower()) == moment


def test_fractions_past_microseconds_are_cut_not_refused() -> None:
    assert parse_timestamp("2026-12-04T10:00:00.123456789Z") == datetime(
        2026, 12, 4, 10, 0, 0, 123456, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "1733300000",
        "2026-12-04",
        "2026-12-04T10:00:00",
        "2026-12-04 10:00:00Z",
        "2026-12-04T24:00:00Z",
        "2026-12-04T10:00:60Z",
        "2026-02-30T10:00:00Z",
        "2026-12-04T10:00:00+24:00",
        "2026-12-04T10:00:00Z\n",
        "",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)
