"""Time: the wall clock every service defaults to, and the one spelling of instants we send.

Services take `clock: Clock = utc_now` as a parameter, so tests pass their own and nothing has
to sleep. Every instant the gateway writes into JSON (answers, webhook payloads, exports,
journals, Google query parameters) goes through `rfc3339`: UTC with a `Z`, so a reader never
meets two spellings of one moment (`+00:00` and `Z`), whichever database the value came from.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal, overload

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


@overload
def rfc3339(moment: datetime, *, timespec: Literal["auto", "seconds"] = "auto") -> str: ...
@overload
def rfc3339(moment: None, *, timespec: Literal["auto", "seconds"] = "auto") -> None: ...
@overload
def rfc3339(
    moment: datetime | None, *, timespec: Literal["auto", "seconds"] = "auto"
) -> str | None: ...
def rfc3339(
    moment: datetime | None, *, timespec: Literal["auto", "seconds"] = "auto"
) -> str | None:
    """`2026-01-02T03:04:05.678901Z`: UTC with a `Z`; fractions only when there are any, or
    none with `timespec="seconds"` (webhook payloads promise whole seconds). A naive time is
    UTC (SQLite hands them back so; we only ever write UTC). None stays None, for optional
    fields that are null in JSON."""
    if moment is None:
        return None
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return aware.isoformat(timespec=timespec).removesuffix("+00:00") + "Z"
