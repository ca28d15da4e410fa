"""Deterministic calendar contents from an integer seed, and recorded Google payloads.

`seed_calendar(store, cal, seed=7, count=10_000)` fills a calendar with a realistic mix: timed
single events, all-day events, weekly series with an EXDATE, a modified and a cancelled instance,
transparent ("free") events, invitations the owner declined, and deleted events (tombstones).
The same seed always gives the same ids and times, so a failing test can be replayed; ids are
chosen here (not by the store's rng) for that reason. Events start around `anchor` (default: the
store's now, rounded to the hour) within +-60 days.

Recorded payloads: `CalendarStore.load_events_payload` (used by the control route) loads an
events.list page verbatim.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from emulator.calendar_store import Calendar, CalendarStore
from emulator.recurrence import zone

Json = dict[str, Any]
_TITLES = ("Standup", "1:1", "Customer call", "Demo", "Planning", "Lunch", "Review", "Sync")


def _id(rng: random.Random) -> str:
    # Hex digits are a subset of base32hex, so these are valid Google event ids (and cheap).
    return f"{rng.getrandbits(128):032x}"


def _weeks_later(start: datetime, weeks: int, tz: ZoneInfo) -> datetime:
    """The k-th weekly occurrence: same wall-clock time in `tz` (DST-proof), as UTC."""
    wall = start.astimezone(tz).replace(tzinfo=None) + timedelta(weeks=weeks)
    return wall.replace(tzinfo=tz).astimezone(UTC)


def generate_events(
    seed: int, count: int, *, anchor: datetime, time_zone: str, owner: str
) -> tuple[list[Json], list[tuple[str, str, Json | None]]]:
    """(bodies to insert, follow-ups) for `count` events. A follow-up is (action, event id,
    patch): `delete` an event, or `patch` an instance id to make a modified exception."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    tz = zone(time_zone) or ZoneInfo("UTC")
    bodies: list[Json] = []
    follow: list[tuple[str, str, Json | None]] = []
    for n in range(count):
        event_id = _id(rng)
        offset_h = rng.randrange(-60 * 24, 60 * 24)
        start = anchor + timedelta(hours=offset_h)
        length = timedelta(minutes=rng.choice((15, 30, 30, 45, 60, 90)))
        title = f"{rng.choice(_TITLES)} #{n}"
        roll = rng.random()
        body: Json = {"id": event_id, "summary": title}
        local = start.astimezone(UTC)
        timed = {
            "start": {"dateTime": local.isoformat(), "timeZone": time_zone},
            "end": {"dateTime": (local + length).isoformat(), "timeZone": time_zone},
        }
        if roll < 0.10:
            day = start.date()
            body["start"] = {"date": day.isoformat()}
            body["end"] = {"date": (day + timedelta(days=rng.choice((1, 1, 2)))).isoformat()}
        elif roll < 0.20:
            body.update(timed)
            skip = _weeks_later(local, 2, tz)
            body["recurrence"] = [
                f"RRULE:FREQ=WEEKLY;COUNT={rng.randrange(4, 20)}",
                f"EXDATE:{skip.strftime('%Y%m%dT%H%M%SZ')}",
            ]
            first = _weeks_later(local, 1, tz)
            third = _weeks_later(local, 3, tz)
            follow.append(
                (
                    "patch",
                    f"{event_id}_{first.strftime('%Y%m%dT%H%M%SZ')}",
                    {"summary": f"{title} (moved)"},
                )
            )
            follow.append(("delete", f"{event_id}_{third.strftime('%Y%m%dT%H%M%SZ')}", None))
        else:
            body.update(timed)
        if 0.20 <= roll < 0.28:
            body["transparency"] = "transparent"
        elif 0.28 <= roll < 0.35:
            body["attendees"] = [
                {"email": "organizer@example.net", "organizer": True, "responseStatus": "accepted"},
                {"email": owner, "responseStatus": "declined"},
            ]
        elif 0.35 <= roll < 0.40:
            follow.append(("delete", event_id, None))
        bodies.append(body)
    return bodies, follow


def seed_calendar(
    store: CalendarStore,
    cal: Calendar,
    *,
    seed: int,
    count: int,
    anchor: datetime | None = None,
) -> Json:
    """Fill `cal` with `count` generated events (plus exceptions and deletions). Push listeners
    hear about it once. Returns counts for logs and the control route."""
    if anchor is None:
        now = datetime.fromtimestamp(store.clock(), UTC)
        anchor = now.replace(minute=0, second=0, microsecond=0)
    bodies, follow = generate_events(
        seed, count, anchor=anchor, time_zone=cal.time_zone, owner=cal.owner
    )
    listeners, store.listeners = store.listeners, []
    clock = store.clock
    frozen_now = clock()
    # One logical instant for the whole batch: `updated` is rendered once, not 10,000 times.
    store.clock = lambda: frozen_now
    try:
        inserted = store.bulk_insert(cal, bodies)
        for action, event_id, patch in follow:
            if action == "delete":
                store.delete_event(cal, event_id)
            elif patch is not None:
                store.patch_event(cal, event_id, patch)
    finally:
        store.listeners = listeners
        store.clock = clock
    store.notify(cal.id)
    return {
        "calendarId": cal.id,
        "inserted": inserted,
        "exceptions": sum(1 for a, _, _ in follow if a == "patch"),
        "deleted": sum(1 for a, _, _ in follow if a == "delete"),
    }
