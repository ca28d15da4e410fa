"""Half-open time intervals [start, end) in UTC, and the operations availability needs.

Every function here is pure and keeps its inputs unchanged. Datetimes must be timezone-aware;
results are in UTC.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, order=True)
class Interval:
    """[start, end) with aware datetimes, normalised to UTC; empty when start >= end."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("interval bounds must be timezone-aware")
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "end", self.end.astimezone(UTC))

    @property
    def empty(self) -> bool:
        return self.start >= self.end

    def overlaps(self, other: Interval) -> bool:
        return self.start < other.end and other.start < self.end

    def widened(self, by: timedelta) -> Interval:
        return Interval(self.start - by, self.end + by)


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping union; touching intervals join; empty ones vanish."""
    merged: list[Interval] = []
    for current in sorted(i for i in intervals if not i.empty):
        if merged and current.start <= merged[-1].end:
            if current.end > merged[-1].end:
                merged[-1] = Interval(merged[-1].start, current.end)
        else:
            merged.append(current)
    return merged


def clip(intervals: Iterable[Interval], window: Interval) -> list[Interval]:
    """The parts of `intervals` inside `window`, merged."""
    return merge(
        Interval(max(i.start, window.start), min(i.end, window.end))
        for i in intervals
        if i.overlaps(window)
    )


def subtract(base: Iterable[Interval], remove: Iterable[Interval]) -> list[Interval]:
    """`base` minus `remove` (both merged first)."""
    holes = merge(remove)
    result: list[Interval] = []
    for part in merge(base):
        cursor = part.start
        for hole in holes:
            if hole.end <= cursor or hole.start >= part.end:
                continue
            if hole.start > cursor:
                result.append(Interval(cursor, hole.start))
            cursor = max(cursor, hole.end)
        if cursor < part.end:
            result.append(Interval(cursor, part.end))
    return result


class BusyIndex:
    """Fast "is anything here?" over merged intervals (binary search, O(log n) a query)."""

    def __init__(self, intervals: Iterable[Interval]) -> None:
        self._merged = merge(intervals)
        self._starts = [i.start for i in self._merged]

    @property
    def intervals(self) -> Sequence[Interval]:
        return self._merged

    def overlaps(self, probe: Interval) -> bool:
        # The only candidate is the last interval starting before probe.end.
        at = bisect.bisect_left(self._starts, probe.end) - 1
        return at >= 0 and self._merged[at].end > probe.start
