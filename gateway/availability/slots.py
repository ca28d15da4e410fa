"""Finding meeting slots: pure domain code (no I/O, `now` passed in).

Rules a demanding user expects, all enforced here:

* Slots start on a grid of `granularity` in the requester's time zone (09:00, 09:15, ... local),
  stepping in wall-clock time so the grid survives DST changes; a slot lasts exactly `duration`.
* With working hours, a slot lies wholly inside one working period of its local day; periods are
  local times, so "09:00-17:00" means 09:00 local before and after a DST change. Wall times that
  do not exist (in a DST gap) are skipped; ambiguous ones (in a DST fold) take their first
  occurrence.
* `buffer` keeps that much free time before and after a slot; `min_notice` keeps slots at least
  that far after `now`.
* Mode `all`: everyone is free (a group meeting). Mode `any`: at least one person is free (round
  robin), and the slot lists who.
* Unknown time is never free: a person's `unknown` intervals (a calendar that could not be read)
  count as busy, and any unknown time inside the window makes the answer `complete=False`.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.availability.intervals import Interval, clip, merge
from gateway.availability.spans import Span, from_us, merge_spans, spans_of, to_us

Mode = Literal["all", "any"]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_DAY = timedelta(days=1)
_ONE_US = timedelta(microseconds=1)


def _minutes(text: str, where: str) -> int:
    m = _HHMM.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{where}: must be a time like 09:30")
    value = int(m[1]) * 60 + int(m[2])
    if value > 24 * 60:
        raise ValueError(f"{where}: must be at most 24:00")
    return value


@dataclass(frozen=True)
class WorkingHours:
    """Working periods per weekday (0 = Monday), as [start, end) minutes after local midnight."""

    by_weekday: Mapping[int, tuple[tuple[int, int], ...]]

    @classmethod
    def parse(cls, spec: Mapping[str, Sequence[Sequence[str]]]) -> WorkingHours:
        """From `{"mon": [["09:00", "13:00"], ["14:00", "18:00"]], ...}`; a missing day is not
        worked. ValueError messages name the offending entry."""
        by_weekday: dict[int, tuple[tuple[int, int], ...]] = {}
        for day, periods in spec.items():
            if day not in WEEKDAYS:
                raise ValueError(f"working_hours.{day}: unknown day; use {', '.join(WEEKDAYS)}")
            parsed: list[tuple[int, int]] = []
            for n, period in enumerate(periods):
                where = f"working_hours.{day}[{n}]"
                if not isinstance(period, Sequence) or isinstance(period, str) or len(period) != 2:
                    raise ValueError(f"{where}: must be a [start, end] pair")
                start, end = _minutes(period[0], where), _minutes(period[1], where)
                if end <= start:
                    raise ValueError(f"{where}: end must be after start")
                parsed.append((start, end))
            parsed.sort()
            for (_, end_a), (start_b, _) in pairwise(parsed):
                if start_b < end_a:
                    raise ValueError(f"working_hours.{day}: periods overlap")
            by_weekday[WEEKDAYS.index(day)] = tuple(parsed)
        return cls(by_weekday)

    def periods(self, window: Interval, tz: ZoneInfo) -> list[Interval]:
        """The working periods overlapping `window`, as UTC intervals clipped to it."""
        found: list[Interval] = []
        day = window.start.astimezone(tz).date() - _DAY  # a period may start the day before
        last = window.end.astimezone(tz).date()
        while day <= last:
            midnight = datetime(day.year, day.month, day.day)
            for start, end in self.by_weekday.get(day.weekday(), ()):
                begin = _aware(midnight + timedelta(minutes=start), tz)
                finish = _aware(midnight + timedelta(minutes=end), tz)
                found.append(Interval(begin, finish))
            day += _DAY
        return clip(found, window)


def _aware(wall: datetime, tz: ZoneInfo) -> datetime:
    """A local wall time as an aware datetime (first occurrence when ambiguous)."""
    return wall.replace(tzinfo=tz, fold=0)


def _exists(wall: datetime, tz: ZoneInfo) -> bool:
    """False for wall times skipped by a DST change (02:30 when clocks jump 02:00 -> 03:00)."""
    return _aware(wall, tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall


@dataclass(frozen=True)
class Person:
    """What is known about one person (integration): busy time, and time nobody can vouch for.

    `busy_us` is the busy time as epoch-microsecond spans (gateway.availability.spans), given
    instead of `busy` by a caller that holds it so (availability's answers): a week of 50
    people's blocks is then not turned into `Interval`s only to be turned back."""

    id: str
    busy: Sequence[Interval] = ()
    unknown: Sequence[Interval] = ()
    busy_us: Sequence[Span] | None = None

    def __post_init__(self) -> None:
        if self.busy and self.busy_us is not None:
            raise ValueError("give busy or busy_us, not both")

    def blocked_us(self) -> list[Span]:
        """Busy and unknown time as spans (unknown time is never free)."""
        busy = self.busy_us if self.busy_us is not None else spans_of(self.busy)
        return [*busy, *spans_of(self.unknown)]


class _Blocked:
    """Merged spans, and whether a probe overlaps them: one bisection."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, spans: Iterable[Span]) -> None:
        merged = merge_spans(spans)
        self._starts = [s for s, _ in merged]
        self._ends = [e for _, e in merged]

    def overlaps(self, lo: int, hi: int) -> bool:
        # The only candidate is the last span starting before `hi`.
        at = bisect_left(self._starts, hi) - 1
        return at >= 0 and self._ends[at] > lo


@dataclass(frozen=True)
class SlotQuery:
    window: Interval
    duration: timedelta
    time_zone: ZoneInfo
    mode: Mode = "all"
    working_hours: WorkingHours | None = None
    buffer: timedelta = timedelta(0)
    granularity: timedelta = timedelta(minutes=15)
    min_notice: timedelta = timedelta(0)
    limit: int = 100

    def __post_init__(self) -> None:
        if self.duration <= timedelta(0):
            raise ValueError("duration must be positive")
        if self.granularity <= timedelta(0):
            raise ValueError("granularity must be positive")
        if self.buffer < timedelta(0) or self.min_notice < timedelta(0):
            raise ValueError("buffer and min_notice must not be negative")
        if self.limit < 1:
            raise ValueError("limit must be at least 1")
        if self.mode not in ("all", "any"):
            raise ValueError("mode must be all or any")


@dataclass(frozen=True)
class Slot:
    start: datetime
    end: datetime
    people: tuple[str, ...]


@dataclass(frozen=True)
class SlotAnswer:
    slots: list[Slot]
    complete: bool
    # People with time nobody could vouch for inside the window.
    incomplete_people: tuple[str, ...] = field(default=())


def find_slots(query: SlotQuery, people: Sequence[Person], now: datetime) -> SlotAnswer:
    """Every slot of the query's grid that satisfies its rules (see the module docstring)."""
    if not people:
        raise ValueError("at least one person is needed")
    window = Interval(max(query.window.start, now + query.min_notice), query.window.end)
    incomplete = tuple(p.id for p in people if clip(p.unknown, query.window))
    answer_complete = not incomplete
    if window.empty:
        return SlotAnswer([], answer_complete, incomplete)
    allowed = (
        query.working_hours.periods(window, query.time_zone)
        if query.working_hours is not None
        else [window]
    )
    # Unknown time is treated exactly like busy time: never offered as free. Everyone must be
    # free for `all`: one union of everyone's blocked time answers that in one bisection.
    everyone = tuple(p.id for p in people)
    blocked = (
        [(everyone, _Blocked(s for p in people for s in p.blocked_us()))]
        if query.mode == "all"
        else [((p.id,), _Blocked(p.blocked_us())) for p in people]
    )
    duration = query.duration // _ONE_US
    buffer = query.buffer // _ONE_US
    slots: list[Slot] = []
    for period in merge(allowed):
        period_end = to_us(period.end)
        for start in _grid(period, query):
            end = start + duration
            if end > period_end:
                break
            lo, hi = start - buffer, end + buffer
            free = tuple(pid for ids, index in blocked if not index.overlaps(lo, hi) for pid in ids)
            if free:
                slots.append(Slot(from_us(start), from_us(end), free))
                if len(slots) >= query.limit:
                    return SlotAnswer(slots, answer_complete, incomplete)
    return SlotAnswer(slots, answer_complete, incomplete)


def _grid(period: Interval, query: SlotQuery) -> list[int]:
    """Grid starts inside `period` (epoch microseconds): local wall times at multiples of the
    granularity after local midnight, stepped in wall time (so 09:00 stays 09:00 across a DST
    change)."""
    tz = query.time_zone
    local_start = period.start.astimezone(tz).replace(tzinfo=None)
    midnight = local_start.replace(hour=0, minute=0, second=0, microsecond=0)
    steps = -(-(local_start - midnight) // query.granularity)  # ceiling division
    wall = midnight + steps * query.granularity
    lo, hi = to_us(period.start), to_us(period.end)
    step = query.granularity
    starts: list[int] = []
    while True:
        offset = tz.utcoffset(wall)  # of the first occurrence (fold=0)
        # Outside a DST gap or fold both readings of a wall time agree; only then does it
        # exist exactly once, and UTC is the wall time minus that offset.
        if offset is not None and offset == tz.utcoffset(wall.replace(fold=1)):
            moment = to_us((wall - offset).replace(tzinfo=UTC))
        elif _exists(wall, tz):
            moment = to_us(_aware(wall, tz).astimezone(UTC))
        else:
            wall += step
            continue
        if moment >= hi:
            return starts
        if moment >= lo:
            starts.append(moment)
        wall += step
