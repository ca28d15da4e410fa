"""A realistic work week for the demo user's calendar, put in "at Google" through the
emulator's control API (`POST /_emulator/calendar/calendars/{id}/events`).

The week mixes what availability must get right: ordinary meetings, a recurring standup (a
series that started the week before), an invitation the user declined (free), a transparent
"focus time" block (free) and an all-day offsite (the whole day busy). Each event says what the
gateway should make of it, and the runner prints that next to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.demo.walk import Google

Json = dict[str, Any]


@dataclass(frozen=True)
class SeedEvent:
    """One event of the week: `key` names it for later steps; `expect` is what availability
    should make of it."""

    key: str
    day: date
    summary: str
    body: Json
    expect: str
    start: time | None = None  # None for all-day
    end: time | None = None
    repeats: str = ""  # how a recurring event is shown ("Mon-Fri")


def next_monday(today: date) -> date:
    """The Monday of next week (never today): the demo's week is always wholly ahead."""
    return today + timedelta(days=7 - today.weekday())


def _timed(day: date, start: time, end: time, tz: ZoneInfo) -> Json:
    def at(t: time) -> Json:
        return {
            "dateTime": datetime.combine(day, t, tzinfo=tz).isoformat(),
            "timeZone": str(tz.key),
        }

    return {"start": at(start), "end": at(end)}


def work_week(monday: date, time_zone: str, owner: str) -> list[SeedEvent]:
    """The events of the week starting `monday`, in `time_zone`, on `owner`'s calendar."""
    tz = ZoneInfo(time_zone)
    days = [monday + timedelta(days=n) for n in range(5)]
    mon, tue, wed, thu, fri = days

    def meeting(
        key: str,
        day: date,
        start: time,
        end: time,
        summary: str,
        expect: str = "busy",
        **extra: Any,
    ) -> SeedEvent:
        body = {"summary": summary, **_timed(day, start, end, tz), **extra}
        repeats = "Mon-Fri" if "recurrence" in extra else ""
        return SeedEvent(key, day, summary, body, expect, start, end, repeats)

    standup_start = monday - timedelta(days=7)  # a series that began last week
    standup = meeting(
        "standup",
        standup_start,
        time(9, 30),
        time(9, 45),
        "Team standup",
        "busy, every weekday (recurring series, expanded by the gateway)",
        recurrence=["RRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"],
    )
    declined = meeting(
        "declined",
        tue,
        time(11, 0),
        time(12, 0),
        "Vendor pitch",
        "free: the user declined the invitation",
        attendees=[
            {"email": "vendor@example.net", "organizer": True, "responseStatus": "accepted"},
            {"email": owner, "responseStatus": "declined"},
        ],
    )
    focus = meeting(
        "focus",
        wed,
        time(14, 0),
        time(16, 0),
        "Focus time",
        'free: marked transparent ("show as available")',
        transparency="transparent",
    )
    offsite = SeedEvent(
        "offsite",
        fri,
        "Sales kickoff (offsite)",
        {
            "summary": "Sales kickoff (offsite)",
            "start": {"date": fri.isoformat()},
            "end": {"date": (fri + timedelta(days=1)).isoformat()},
        },
        "busy all day (all-day event)",
    )
    return [
        standup,
        meeting("pipeline", mon, time(10, 0), time(11, 0), "Pipeline review"),
        meeting("globex", mon, time(14, 0), time(15, 30), "Customer call: Globex"),
        declined,
        meeting("lunch", tue, time(12, 30), time(13, 30), "Lunch with the new AE"),
        meeting("initech", tue, time(15, 0), time(16, 0), "Demo for Initech"),
        meeting("planning", wed, time(10, 0), time(11, 30), "Quarterly planning"),
        focus,
        meeting("one_on_one", wed, time(16, 30), time(17, 0), "1:1 with manager"),
        meeting("forecast", thu, time(11, 0), time(12, 0), "Forecast call"),
        meeting("umbrella", thu, time(14, 0), time(15, 0), "Customer call: Umbrella"),
        offsite,
    ]


async def seed_week(google: Google, calendar_id: str, events: list[SeedEvent]) -> dict[str, str]:
    """Insert `events` at the emulator, as the user would in Google Calendar; returns the
    Google event id of each event by key."""
    ids: dict[str, str] = {}
    for event in events:
        created = await google.call("POST", f"/calendar/calendars/{calendar_id}/events", event.body)
        ids[event.key] = str(created["id"])
    return ids
