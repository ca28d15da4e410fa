"""Busy time as integers: spans of epoch microseconds, for the availability hot path.

    lo, hi = to_us(window.start), to_us(window.end)
    busy = merge_spans([*a, *b])                # sorted, non-overlapping, touching ones joined
    [{"start": rfc3339_us(s), "end": rfc3339_us(e)} for s, e in busy]

`gateway.availability.intervals` says the same with `Interval`s of aware datetimes, which is
what slots and bookings reason with. A one-week free/busy answer from the in-process index used
to build a datetime pair, an `Interval` and an ISO string per block, several times over (clip,
merge, render): more than half of the request's CPU. Here a block is a tuple of two ints, and
microseconds (not seconds) keep every instant a datetime can hold exact, so a window given with
a fraction of a second clips and renders as before. Pure: no I/O, no clock.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from gateway.availability.intervals import Interval

Span = tuple[int, int]  # [start, end) in microseconds since 1970-01-01T00:00:00Z

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US_PER_S = 1_000_000
_ONE_US = timedelta(microseconds=1)


def to_us(moment: datetime) -> int:
    """An aware datetime as epoch microseconds (exact)."""
    return (moment - EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    """Epoch microseconds as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=us)


def spans_of(intervals: Iterable[Interval]) -> list[Span]:
    """`intervals` as spans (same order)."""
    return [(to_us(i.start), to_us(i.end)) for i in intervals]


def intervals_of(spans: Iterable[Span]) -> list[Interval]:
    """`spans` as `Interval`s (same order)."""
    return [Interval(from_us(s), from_us(e)) for s, e in spans]


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Sorted, non-overlapping union; touching spans join; empty ones vanish (as
    intervals.merge)."""
    merged: list[Span] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def clip_spans(spans: Iterable[Span], lo: int, hi: int) -> list[Span]:
    """The parts of `spans` inside [lo, hi), merged (as intervals.clip)."""
    return merge_spans((max(s, lo), min(e, hi)) for s, e in spans if s < hi and lo < e)


@functools.lru_cache(maxsize=1 << 16)
def _whole_second(seconds: int) -> str:
    return (EPOCH + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def rfc3339_us(us: int) -> str:
    """The instant as availability answers spell it (`gateway.clock.rfc3339`: UTC,
    `Z`-suffixed, a fraction only when there is one). Block edges are whole seconds and
    repeat from request to request, so their strings are remembered (a bounded cache of a
    pure function)."""
    seconds, fraction = divmod(us, US_PER_S)
    if fraction == 0:
        return _whole_second(seconds)
    return from_us(us).isoformat().replace("+00:00", "Z")
