"""Local expansion of recurring series (pure: no I/O).

Google sends a recurring series as one master (`recurrence`: RRULE/EXDATE/RDATE lines, `start`
with its `timeZone`) plus exceptions as separate events. We expand the master ourselves, like
Home Assistant's gcal_sync, so a series costs one record, not one per occurrence.

How it is done, and why:

* Rules are evaluated in NAIVE LOCAL wall time of the series' zone, then each occurrence is
  given that zone and converted to UTC. That keeps a 09:00 America/New_York meeting at 09:00
  local on both sides of a DST change (its UTC instant moves by an hour), which is what
  iCalendar and Google mean. dateutil refuses to mix naive and aware values, so every UNTIL,
  EXDATE and RDATE is first brought into the same naive local form.
* UNTIL may be a date (inclusive: the whole day), a local date-time, or UTC (`...Z`).
* EXDATE/RDATE may carry `TZID=Zone`, be UTC (`...Z`), floating (the series' zone), or a DATE
  (for a timed series: that day at the series' time of day).
* All-day series run on naive midnights; their blocks are placed in the calendar's zone by the
  caller.
* The most common rules (FREQ=DAILY or WEEKLY, with INTERVAL, COUNT or UNTIL, a WEEKLY BYDAY
  naming the first start's own weekday, EXDATE lines) are stepped through directly: what dateutil
  yields for them is the first start plus whole steps of naive local time, and building and
  iterating its rule objects was most of a sync's CPU. Anything else goes to dateutil
  (tests/sync/test_recurrence.py checks both give the same occurrences).
* An occurrence is identified by its ORIGINAL start, as a key that matches the suffix Google
  puts on instance ids: `YYYYMMDDTHHMMSSZ` (UTC) for timed series, `YYYYMMDD` for all-day ones.
  Exceptions are matched to occurrences by that key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrule, rruleset, rrulestr

from gateway.google.events import occurrence_key
from gateway.sync.errors import RecurrenceError

# A bound for endless or very dense rules (FREQ=MINUTELY ...): nobody has more busy
# occurrences of one series inside a horizon of about a year.
MAX_OCCURRENCES = 5000

_UNTIL = re.compile(r"UNTIL=([^;]*)")


class Occurrence(NamedTuple):
    """One occurrence of a series: [start, end) in UTC and the key of its original start (a
    named tuple: cheap to build by the thousand)."""

    start: datetime
    end: datetime
    key: str


def _basic(raw: str) -> datetime:
    """An iCalendar DATE (`YYYYMMDD`) or local DATE-TIME (`YYYYMMDDTHHMMSS`) as a naive
    datetime; ValueError for anything else. By hand: `strptime` was a tenth of a calendar's
    expansion (every series' UNTIL and EXDATE values go through here)."""
    digits = raw[:8] + raw[9:]
    if len(raw) not in (8, 15) or (len(raw) == 15 and raw[8] != "T"):
        raise ValueError("not an iCalendar date or date-time")
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError("not an iCalendar date or date-time")
    day = int(raw[0:4]), int(raw[4:6]), int(raw[6:8])
    if len(raw) == 8:
        return datetime(*day)
    return datetime(*day, int(raw[9:11]), int(raw[11:13]), int(raw[13:15]))


def _local_naive(moment: datetime, tz: tzinfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


def _fix_until(rule: str, tz: tzinfo, all_day: bool) -> str:
    """Rewrite UNTIL as a naive local date-time (dateutil wants it like DTSTART)."""
    m = _UNTIL.search(rule)
    if m is None:
        return rule
    raw = m[1].upper()
    try:
        if len(raw) == 8:
            day = _basic(raw)
            # A date UNTIL includes that whole day.
            local = day if all_day else day.replace(hour=23, minute=59, second=59)
        elif raw.endswith("Z"):
            utc = _basic(raw[:-1]).replace(tzinfo=UTC)
            local = _local_naive(utc, tz)
            if all_day:
                local = datetime.combine(local.date(), time())
        else:
            local = _basic(raw)
    except ValueError as exc:
        raise RecurrenceError("bad UNTIL value") from exc
    return rule[: m.start(1)] + local.strftime("%Y%m%dT%H%M%S") + rule[m.end(1) :]


def _zone_of(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: "America", a folder
        raise RecurrenceError("unknown TZID") from exc


def _parse_dates(line: str, dtstart: datetime, tz: tzinfo, all_day: bool) -> list[datetime]:
    """The values of an EXDATE or RDATE line, as naive local date-times of the series."""
    head, _, values = line.partition(":")
    params = dict(p.split("=", 1) for p in head.split(";")[1:] if "=" in p)
    value_tz = _zone_of(params["TZID"]) if "TZID" in params else tz
    out: list[datetime] = []
    for raw in filter(None, (v.strip().upper() for v in values.split(","))):
        try:
            if len(raw) == 8:
                day = _basic(raw)
                out.append(datetime.combine(day.date(), dtstart.time()))
                continue
            if raw.endswith("Z"):
                aware = _basic(raw[:-1]).replace(tzinfo=UTC)
            else:
                aware = _basic(raw).replace(tzinfo=value_tz)
        except ValueError as exc:
            raise RecurrenceError("bad EXDATE/RDATE value") from exc
        local = _local_naive(aware, tz)
        out.append(datetime.combine(local.date(), time()) if all_day else local)
    return out


def build_rules(lines: Iterable[str], dtstart: datetime, tz: tzinfo, all_day: bool) -> rruleset:
    """Compile recurrence lines for a series whose first start is `dtstart` (naive local)."""
    rules = rruleset()
    found = False
    for line in lines:
        name = line.split(":", 1)[0].split(";", 1)[0].strip().upper()
        if name in ("RRULE", "EXRULE"):
            body = _fix_until(line.split(":", 1)[1], tz, all_day)
            try:
                parsed = rrulestr(body, dtstart=dtstart)
            except (ValueError, TypeError) as exc:
                raise RecurrenceError("bad RRULE") from exc
            if not isinstance(parsed, rrule):
                raise RecurrenceError("one rule per RRULE line")
            if name == "RRULE":
                rules.rrule(parsed)
                found = True
            else:
                rules.exrule(parsed)
        elif name == "EXDATE":
            for moment in _parse_dates(line, dtstart, tz, all_day):
                rules.exdate(moment)
        elif name == "RDATE":
            for moment in _parse_dates(line, dtstart, tz, all_day):
                rules.rdate(moment)
                found = True
        # Anything else (a stray DTSTART, X- lines) carries no occurrence: ignored.
    if not found:
        raise RecurrenceError("no RRULE or RDATE")
    return rules


_STEPS = {"DAILY": timedelta(days=1), "WEEKLY": timedelta(weeks=1)}
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


def _simple_occurrences(
    lines: Sequence[str], dtstart: datetime, tz: tzinfo, all_day: bool, after: datetime
) -> Iterator[datetime] | None:
    """The occurrences from `after` on (naive local, in order) of a rule of the common shape
    (module doc), or None when dateutil must read it."""
    if dtstart.microsecond:
        return None  # dateutil drops microseconds from the first start
    body: str | None = None
    excluded: set[datetime] = set()
    for line in lines:
        name = line.split(":", 1)[0].split(";", 1)[0].strip().upper()
        if name == "RRULE":
            if body is not None or ":" not in line:
                return None
            body = _fix_until(line.split(":", 1)[1], tz, all_day)
        elif name == "EXDATE":
            excluded.update(_parse_dates(line, dtstart, tz, all_day))
        elif name in ("RDATE", "EXRULE"):
            return None
    if body is None:
        return None
    parts: dict[str, str] = {}
    for part in body.split(";"):
        key, sep, value = part.partition("=")
        if not sep or key in parts:
            return None
        parts[key] = value
    step = _STEPS.get(parts.pop("FREQ", ""))
    interval, count, until = parts.pop("INTERVAL", "1"), parts.pop("COUNT", None), None
    if step is None or not interval.isdigit() or int(interval) < 1:
        return None
    if parts.get("BYDAY") == _WEEKDAYS[dtstart.weekday()] and step == _STEPS["WEEKLY"]:
        del parts["BYDAY"]  # the first start's own weekday: what WEEKLY does anyway
    if "UNTIL" in parts:
        raw = parts.pop("UNTIL")
        if count is not None or len(raw) != 15 or not raw[:8].isdigit():
            return None
        until = _basic(raw)
    if parts or (count is not None and (not count.isdigit() or int(count) < 1)):
        return None
    return _stepped(dtstart, step * int(interval), count, until, excluded, after)


def _stepped(
    dtstart: datetime,
    step: timedelta,
    count: str | None,
    until: datetime | None,
    excluded: set[datetime],
    after: datetime,
) -> Iterator[datetime]:
    limit = int(count) if count is not None else None
    # Straight to the first step at or after `after` (COUNT still counts from the first start).
    k = max(0, (after - dtstart) // step)
    while limit is None or k < limit:
        try:
            moment = dtstart + k * step
        except OverflowError:
            return
        if until is not None and moment > until:
            return
        k += 1
        if moment >= after and moment not in excluded:
            yield moment


def _occurrences(
    lines: Iterable[str], dtstart: datetime, tz: tzinfo, all_day: bool, after: datetime, fast: bool
) -> Iterator[datetime]:
    listed = list(lines)
    found = _simple_occurrences(listed, dtstart, tz, all_day, after) if fast else None
    if found is not None:
        return found
    return build_rules(listed, dtstart, tz, all_day).xafter(after, inc=True)


def expand_timed(
    lines: Iterable[str],
    start: datetime,
    end: datetime,
    tz: tzinfo,
    window_start: datetime,
    window_end: datetime,
    *,
    limit: int = MAX_OCCURRENCES,
    fast: bool = True,
    keys: bool = True,
) -> list[Occurrence]:
    """Occurrences of a timed series overlapping [window_start, window_end) (aware, any zone).

    `start`/`end` are the master's first occurrence (aware); `tz` the series' zone (the
    master's `start.timeZone`). Each occurrence lasts as long as the first in absolute time.
    `fast=False` sends every rule to dateutil (tests compare the two). `keys=False` leaves
    every key empty: a series without exceptions has nothing to match them with, and
    formatting one per occurrence was a tenth of an expansion.
    """
    duration = end - start
    dtstart = _local_naive(start, tz)
    # A day of slack either side absorbs any UTC offset; exact filtering happens in UTC.
    after = max(dtstart, _local_naive(window_start - duration, tz) - timedelta(days=1))
    stop = _local_naive(window_end, tz) + timedelta(days=1)
    out: list[Occurrence] = []
    for local in _occurrences(lines, dtstart, tz, False, after, fast):
        if local >= stop or len(out) >= limit:
            break
        occ_start = local.replace(tzinfo=tz).astimezone(UTC)
        occ_end = occ_start + duration
        if occ_end <= window_start or occ_start >= window_end:
            continue
        out.append(Occurrence(occ_start, occ_end, occurrence_key(occ_start) if keys else ""))
    return out


def expand_all_day(
    lines: Iterable[str],
    start: date,
    end: date,
    calendar_tz: tzinfo,
    window_start: datetime,
    window_end: datetime,
    *,
    limit: int = MAX_OCCURRENCES,
    fast: bool = True,
) -> list[Occurrence]:
    """Occurrences of an all-day series (end date exclusive) overlapping the window; each
    blocks whole days from local midnight to local midnight in `calendar_tz`."""
    days = max((end - start).days, 1)
    dtstart = datetime.combine(start, time())
    after = max(dtstart, _local_naive(window_start, calendar_tz) - timedelta(days=days + 1))
    stop = _local_naive(window_end, calendar_tz) + timedelta(days=1)
    out: list[Occurrence] = []
    for local in _occurrences(lines, dtstart, calendar_tz, True, after, fast):
        if local >= stop or len(out) >= limit:
            break
        first = local.date()
        occ_start, occ_end = day_span(first, first + timedelta(days=days), calendar_tz)
        if occ_end <= window_start or occ_start >= window_end:
            continue
        out.append(Occurrence(occ_start, occ_end, occurrence_key(first)))
    return out


def day_span(first: date, end_exclusive: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """[local midnight of `first`, local midnight of `end_exclusive`) in UTC (a DST day is 23
    or 25 hours long, which is why this is not `days * 24h`)."""
    return (
        datetime.combine(first, time(), tzinfo=tz).astimezone(UTC),
        datetime.combine(end_exclusive, time(), tzinfo=tz).astimezone(UTC),
    )
