"""Time values and recurrence as Google Calendar reads and writes them.

Two jobs live here because they are inseparable: parsing/rendering RFC 3339 values exactly as
strictly as Google (its errors quote Joda-Time, e.g. `Invalid format: "...-07:0" is malformed at
"-07:0"`), and expanding RRULE/EXDATE/RDATE lines into occurrences with python-dateutil and
zoneinfo. Expansion happens in the event's own time zone, so a 09:00 America/New_York meeting stays
09:00 local across daylight-saving changes; callers convert to the response zone afterwards.

All-day values are naive midnights (a date has no zone); timed values are aware datetimes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrule, rruleset, rrulestr


class TimeValueError(ValueError):
    """A malformed time value; `message` is Google's wording (without `Invalid value for: `)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# RFC 3339 as Google's Joda-based parser walks it: each piece must match in turn, and the error
# quotes the remainder from the first piece that does not.
_DT_PIECES: tuple[tuple[re.Pattern[str], bool], ...] = tuple(
    (re.compile(pattern), optional)
    for pattern, optional in (
        (r"\d{4}", False),
        (r"-", False),
        (r"\d{2}", False),
        (r"-", False),
        (r"\d{2}", False),
        (r"[Tt]", False),
        (r"\d{2}", False),
        (r":", False),
        (r"\d{2}", False),
        (r":\d{2}", True),
        (r"\.\d{1,9}", True),
    )
)
_OFFSET = re.compile(r"[Zz]|[+-]\d{2}:\d{2}")
_FAST_DT = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}(?::\d{2})?(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?"
)
_EXTRA_DIGITS = re.compile(r"(\.\d{6})\d+")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def parse_datetime(value: str, *, offset_required: bool = True) -> datetime:
    """Parse an RFC 3339 date-time. Returns an aware datetime, or a naive one when the offset is
    missing and `offset_required` is False (the event body allows that when `timeZone` is set)."""
    m = _FAST_DT.fullmatch(value)
    if m is not None and (m[2] or not offset_required):
        # Well-formed (the common case): skip the piece-by-piece walk that explains errors.
        # Only more than 6 fraction digits need the substitution (most values have none).
        text = value.upper()
        if m[1] is not None and len(m[1]) > 7:
            text = _EXTRA_DIGITS.sub(r"\1", text)
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass  # out-of-range field: let the walk below word the error
    pos = 0
    for pattern, optional in _DT_PIECES:
        m = pattern.match(value, pos)
        if m is None:
            if optional:
                continue
            if pos >= len(value):
                raise TimeValueError(f'Invalid format: "{value}" is too short')
            raise TimeValueError(f'Invalid format: "{value}" is malformed at "{value[pos:]}"')
        pos = m.end()
    offset = _OFFSET.match(value, pos)
    if offset is not None:
        pos = offset.end()
    elif pos < len(value) or offset_required:
        if pos >= len(value):
            raise TimeValueError(f'Invalid format: "{value}" is too short')
        raise TimeValueError(f'Invalid format: "{value}" is malformed at "{value[pos:]}"')
    if pos != len(value):
        raise TimeValueError(f'Invalid format: "{value}" is malformed at "{value[pos:]}"')
    text = value.replace("t", "T").replace("z", "Z")
    try:
        # fromisoformat accepts at most 6 fraction digits; Google ignores sub-millisecond digits.
        text = _EXTRA_DIGITS.sub(r"\1", text)
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise TimeValueError(f'Cannot parse "{value}": {exc}') from exc


def parse_date(value: str) -> date:
    """Parse an all-day `date` (YYYY-MM-DD) with Google's hint when a date-time was sent."""
    if "T" in value or "t" in value:
        raise TimeValueError(
            f"'T' found, can only parse bare date string: {value} "
            "Have you accidentally used DateTime instead of a Date?"
        )
    m = _DATE.fullmatch(value)
    if m is None:
        raise TimeValueError(f'Invalid format: "{value}" is malformed')
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError as exc:
        raise TimeValueError(f'Cannot parse "{value}": {exc}') from exc


@functools.lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo | None:
    """The IANA zone `name`, or None when it does not exist."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America", a folder
        return None


def format_datetime(value: datetime, tz: tzinfo) -> str:
    """Render like Google: seconds precision in the response zone, `Z` only for UTC."""
    local = value.astimezone(tz)
    if local.microsecond:
        local = local.replace(microsecond=0)
    text = local.isoformat()
    if text.endswith("+00:00") and _is_utc(tz):
        text = text[: -len("+00:00")] + "Z"
    return text


def _is_utc(tz: tzinfo) -> bool:
    return tz is UTC or getattr(tz, "key", None) in ("UTC", "Etc/UTC", "GMT", "Etc/GMT")


@functools.lru_cache(maxsize=256)  # writes in one burst share a clock reading
def format_utc_millis(epoch_s: float) -> str:
    """`updated`/`created` style: `2012-01-09T19:39:49.000Z`."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def instance_suffix(original_start: datetime, all_day: bool) -> str:
    """The part after `_` in an instance id: UTC `YYYYMMDDTHHMMSSZ`, or `YYYYMMDD` for all-day."""
    if all_day:
        return original_start.strftime("%Y%m%d")
    return original_start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_instance_suffix(suffix: str, tz: tzinfo, all_day: bool) -> datetime | None:
    """Inverse of `instance_suffix`, in the event's zone; None when the suffix is malformed."""
    try:
        if all_day:
            return datetime.strptime(suffix, "%Y%m%d")
        return datetime.strptime(suffix, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).astimezone(tz)
    except ValueError:
        return None


class RecurrenceError(ValueError):
    """A recurrence line Google would refuse (`Invalid recurrence rule.`)."""


_UNTIL = re.compile(r"UNTIL=([0-9TZ]+)", re.IGNORECASE)


def _fix_until(rule: str, dtstart: datetime, tz: tzinfo) -> str:
    """dateutil insists UNTIL matches DTSTART's awareness; Google accepts any of date, local and
    UTC forms, so normalise UNTIL to what dateutil wants."""
    m = _UNTIL.search(rule)
    if m is None:
        return rule
    raw = m[1].upper()
    try:
        if len(raw) == 8:
            until = datetime.strptime(raw, "%Y%m%d").replace(hour=23, minute=59, second=59)
            until_aware = until.replace(tzinfo=tz)
        elif raw.endswith("Z"):
            until_aware = datetime.strptime(raw, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        else:
            until_aware = datetime.strptime(raw, "%Y%m%dT%H%M%S").replace(tzinfo=tz)
    except ValueError as exc:
        raise RecurrenceError(f"bad UNTIL {raw}") from exc
    if dtstart.tzinfo is None:
        text = until_aware.astimezone(tz).strftime("%Y%m%dT%H%M%S")
    else:
        text = until_aware.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return rule[: m.start(1)] + text + rule[m.end(1) :]


def _parse_dates(line: str, dtstart: datetime, tz: tzinfo) -> list[datetime]:
    """EXDATE/RDATE values: `;TZID=Zone:local`, `:...Z`, `;VALUE=DATE:YYYYMMDD` or floating."""
    head, _, values = line.partition(":")
    params = dict(p.split("=", 1) for p in head.split(";")[1:] if "=" in p)
    value_tz: tzinfo = tz
    if "TZID" in params:
        found = zone(params["TZID"])
        if found is None:
            raise RecurrenceError(f"unknown TZID {params['TZID']}")
        value_tz = found
    out: list[datetime] = []
    for raw in filter(None, (v.strip().upper() for v in values.split(","))):
        try:
            if len(raw) == 8:
                day = datetime.strptime(raw, "%Y%m%d")
                # A bare date excludes/adds the occurrence on that day at the series' time.
                moment = day.replace(
                    hour=dtstart.hour, minute=dtstart.minute, second=dtstart.second
                )
                out.append(moment if dtstart.tzinfo is None else moment.replace(tzinfo=tz))
                continue
            if raw.endswith("Z"):
                moment = datetime.strptime(raw, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            else:
                moment = datetime.strptime(raw, "%Y%m%dT%H%M%S").replace(tzinfo=value_tz)
        except ValueError as exc:
            raise RecurrenceError(f"bad date {raw}") from exc
        if dtstart.tzinfo is None:
            out.append(moment.astimezone(tz).replace(tzinfo=None))
        else:
            out.append(moment.astimezone(tz))
    return out


def build_ruleset(recurrence: list[str], dtstart: datetime, tz: tzinfo) -> rruleset:
    """Compile recurrence lines for a series starting at `dtstart` (aware in `tz`, or a naive
    midnight for all-day series). Raises RecurrenceError for lines Google would refuse."""
    rules = rruleset()
    has_rule = False
    for line in recurrence:
        if not isinstance(line, str):
            raise RecurrenceError("recurrence lines must be strings")
        name = line.split(":", 1)[0].split(";", 1)[0].upper()
        if name == "RRULE":
            body = _fix_until(line.split(":", 1)[1], dtstart, tz)
            try:
                parsed = rrulestr(body, dtstart=dtstart)
            except (ValueError, TypeError) as exc:
                raise RecurrenceError(str(exc)) from exc
            if not isinstance(parsed, rrule):
                raise RecurrenceError("one rule per RRULE line")
            rules.rrule(parsed)
            has_rule = True
        elif name == "EXRULE":
            body = _fix_until(line.split(":", 1)[1], dtstart, tz)
            try:
                parsed = rrulestr(body, dtstart=dtstart)
            except (ValueError, TypeError) as exc:
                raise RecurrenceError(str(exc)) from exc
            if isinstance(parsed, rrule):
                rules.exrule(parsed)
        elif name == "EXDATE":
            for moment in _parse_dates(line, dtstart, tz):
                rules.exdate(moment)
        elif name == "RDATE":
            for moment in _parse_dates(line, dtstart, tz):
                rules.rdate(moment)
                has_rule = True
        else:
            raise RecurrenceError(f"unsupported recurrence line {name}")
    if not has_rule:
        raise RecurrenceError("no RRULE or RDATE")
    return rules


def occurrences(
    rules: rruleset,
    dtstart: datetime,
    duration: timedelta,
    window_start: datetime | None,
    window_end: datetime,
    *,
    limit: int = 5000,
) -> Iterator[datetime]:
    """Original start times of occurrences overlapping the window, ascending.

    Google's window is end-exclusive on both sides: an occurrence counts when it ends after
    `window_start` and starts before `window_end`. The window is given in the series' own kind
    (aware for timed, naive local for all-day). `limit` bounds endless rules.
    """
    after = dtstart if window_start is None else max(dtstart, window_start - duration)
    count = 0
    for occ in rules.xafter(after, inc=True):
        if occ >= window_end:
            return
        if window_start is not None and occ + duration <= window_start:
            continue
        yield occ
        count += 1
        if count >= limit:
            return
