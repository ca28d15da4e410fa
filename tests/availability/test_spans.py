"""Busy time as epoch microseconds (the hot path's arithmetic) says exactly what the
`Interval` arithmetic says, and renders instants as availability answers always have."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.availability.intervals import Interval, clip, merge
from gateway.availability.spans import (
    clip_spans,
    from_us,
    intervals_of,
    merge_spans,
    rfc3339_us,
    spans_of,
    to_us,
)

T0 = datetime(2026, 12, 7, tzinfo=UTC)
moments = st.integers(min_value=0, max_value=10 * 86_400 * 10**6).map(
    lambda us: T0 + timedelta(microseconds=us)
)
intervals = st.lists(st.tuples(moments, moments).map(lambda p: Interval(*p)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(intervals, moments, moments)
def test_merge_and_clip_agree_with_the_interval_arithmetic(
    found: list[Interval], a: datetime, b: datetime
) -> None:
    assert intervals_of(merge_spans(spans_of(found))) == merge(found)
    window = Interval(min(a, b), max(a, b))
    assert intervals_of(clip_spans(spans_of(found), to_us(window.start), to_us(window.end))) == (
        clip(found, window)
    )


@given(moments)
def test_an_instant_renders_as_availability_answers_spell_it(moment: datetime) -> None:
    assert rfc3339_us(to_us(moment)) == moment.isoformat().replace("+00:00", "Z")
    assert from_us(to_us(moment)) == moment


def test_offsets_become_utc_and_whole_seconds_carry_no_fraction() -> None:
    berlin = datetime(2026, 12, 7, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    assert rfc3339_us(to_us(berlin)) == "2026-12-07T09:00:00Z"
    assert rfc3339_us(to_us(berlin) + 250_000) == "2026-12-07T09:00:00.250000Z"
