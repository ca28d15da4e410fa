"""Events found by the sync: `booking.updated`, `booking.cancelled` and `availability.changed`.

`record_sync_changes` is called by the sync store inside the transaction that applies an
incremental delta, before the delta replaces the stored records.

Booked meetings: each incoming record whose stored version was booked by
this integration (`created_by_gateway`) is compared with it. Moved, edited (title,
description, location) or an attendee's response changed -> `booking.updated` with before and
after; cancelled or deleted -> `booking.cancelled`. Changes the gateway made itself were merged
into the copy when it made them (`merge_local`), so they compare equal here and announce
nothing. Details are in the payloads because these meetings are the gateway's own (the data
policy keeps them in full); nothing of the user's other events is ever read here.

Availability (opt-in): any delta that touches events announces the span of time it may have
changed (the old and new times of the touched events; the whole synced horizon for a series),
with no event data. At most one per integration per `coalesce_s`: a change while the last
announcement has not gone out yet widens its span; one after that waits until `coalesce_s`
after the last.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.clock import rfc3339
from gateway.db.schema import calendar_events
from gateway.db.values import as_utc
from gateway.google.events import Event
from gateway.webhooks.model import (
    AVAILABILITY_CHANGED,
    BOOKING_CANCELLED,
    BOOKING_UPDATED,
)
from gateway.webhooks.outbox import record_availability_change, record_event, subscriptions


def _when(
    start: datetime | None, start_date: object, end: datetime | None, end_date: object
) -> dict[str, Any]:
    if start is not None and end is not None:
        return {
            "start": rfc3339(start, timespec="seconds"),
            "end": rfc3339(end, timespec="seconds"),
        }
    return {
        "start_date": str(start_date) if start_date else None,
        "end_date": str(end_date) if end_date else None,
    }


def _state(times: dict[str, Any], details: dict[str, Any] | None) -> dict[str, Any]:
    details = details or {}
    return {
        **times,
        **{k: details.get(k) for k in ("summary", "description", "location")},
        "attendees": [
            {"email": a.get("email"), "response_status": a.get("responseStatus")}
            for a in details.get("attendees") or []
            if not a.get("self")
        ],
    }


async def record_booking_changes(
    conn: AsyncConnection,
    *,
    tenant_id: str,
    integration_id: str,
    calendar_id: str,
    generation: int,
    items: Sequence[Event],
    now: datetime,
    wanted: frozenset[str] | None = None,
) -> int:
    """Announce changes to booked meetings among `items` (before they are applied); returns
    how many events were recorded. `wanted`: the tenant's `subscriptions`, if already read."""
    if not items:
        return 0
    if wanted is None:
        wanted = await subscriptions(conn, tenant_id)
    if wanted.isdisjoint((BOOKING_UPDATED, BOOKING_CANCELLED)):
        return 0
    latest = {r.event_id: r for r in items if r.recurring_event_id is None}
    c = calendar_events.c
    rows = (
        (
            await conn.execute(
                select(c.event_id, c.start_at, c.end_at, c.start_date, c.end_date, c.details).where(
                    c.calendar_id == calendar_id,
                    c.generation == generation,
                    c.created_by_gateway.is_(True),
                    c.event_id.in_(list(latest)),
                )
            )
        )
        .mappings()
        .all()
    )
    recorded = 0
    for row in rows:
        new = latest[row["event_id"]]
        before = _state(
            _when(row["start_at"], row["start_date"], row["end_at"], row["end_date"]),
            json.loads(row["details"]) if row["details"] else None,
        )
        base = {
            "integration_id": integration_id,
            "calendar_id": calendar_id,
            "event_id": new.event_id,
            "occurred_at": rfc3339(now, timespec="seconds"),
        }
        if new.cancelled:
            data = {**base, "before": before}
            event_type = BOOKING_CANCELLED
        else:
            after = _state(
                _when(new.start_at, new.start_date, new.end_at, new.end_date),
                dict(new.details) if new.details is not None else None,
            )
            changes = [
                name
                for name, keys in (
                    ("time", ("start", "end", "start_date", "end_date")),
                    ("details", ("summary", "description", "location")),
                    ("attendees", ("attendees",)),
                )
                if any(before.get(k) != after.get(k) for k in keys)
            ]
            if not changes:
                continue
            data = {**base, "changes": changes, "before": before, "after": after}
            event_type = BOOKING_UPDATED
        if await record_event(
            conn, event_type, data, now=now, integration_id=integration_id, tenant_id=tenant_id
        ):
            recorded += 1
    return recorded


async def record_sync_changes(
    conn: AsyncConnection,
    *,
    tenant_id: str,
    integration_id: str,
    calendar_id: str,
    generation: int,
    items: Sequence[Event],
    now: datetime,
    horizon: tuple[datetime, datetime] | None,
    coalesce_s: float,
) -> None:
    """Every webhook event a delta causes (the one hook the sync store calls)."""
    if not items:
        return
    wanted = await subscriptions(conn, tenant_id)  # one read for both kinds
    await record_booking_changes(
        conn,
        tenant_id=tenant_id,
        integration_id=integration_id,
        calendar_id=calendar_id,
        generation=generation,
        items=items,
        now=now,
        wanted=wanted,
    )
    if AVAILABILITY_CHANGED not in wanted:
        return
    span = await _changed_span(conn, calendar_id, generation, items, horizon)
    if span is not None:
        await record_availability_change(
            conn,
            tenant_id=tenant_id,
            integration_id=integration_id,
            span=span,
            now=now,
            coalesce_s=coalesce_s,
        )


async def _changed_span(
    conn: AsyncConnection,
    calendar_id: str,
    generation: int,
    items: Sequence[Event],
    horizon: tuple[datetime, datetime] | None,
) -> tuple[datetime, datetime] | None:
    """The old and new times of the touched events; the horizon when a series or an event
    without known times is among them."""
    c = calendar_events.c
    ids = list({r.event_id for r in items})
    rows = (
        await conn.execute(
            select(c.start_at, c.end_at, c.recurrence).where(
                c.calendar_id == calendar_id, c.generation == generation, c.event_id.in_(ids)
            )
        )
    ).all()
    starts: list[datetime] = []
    ends: list[datetime] = []
    whole = False
    for r in items:
        if r.recurrence or r.recurring_event_id or r.all_day:
            whole = True
        elif r.start_at is not None and r.end_at is not None:
            starts.append(r.start_at)
            ends.append(r.end_at)
    for row in rows:
        if row.recurrence:
            whole = True
        elif row.start_at is not None and row.end_at is not None:
            starts.append(as_utc(row.start_at) or row.start_at)
            ends.append(as_utc(row.end_at) or row.end_at)
    if whole and horizon is not None:
        return horizon
    if not starts:
        return horizon
    return min(starts), max(ends)
