"""The parse+insert baseline stores what a full sync stores (events and busy blocks) and
leaves nothing behind in the bench's database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.bench.baseline import Pages, parse_insert_baseline
from gateway.clock import rfc3339
from gateway.db.schema import busy_blocks, calendar_events


def _page() -> bytes:
    monday = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    timed = {"dateTime": rfc3339(monday)}
    later = {"dateTime": rfc3339(monday + timedelta(hours=1))}
    items = [
        {"id": "single", "status": "confirmed", "start": timed, "end": later},
        {
            "id": "weekly",
            "status": "confirmed",
            "start": {**timed, "timeZone": "UTC"},
            "end": {**later, "timeZone": "UTC"},
            "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4"],
        },
        {
            "id": "free",
            "status": "confirmed",
            "transparency": "transparent",
            "start": timed,
            "end": later,
        },
    ]
    return orjson.dumps({"timeZone": "UTC", "items": items, "nextSyncToken": "t"})


async def test_the_baseline_inserts_each_event_and_its_busy_blocks(
    engine: AsyncEngine, database_url: str
) -> None:
    pages = [Pages([_page()]), Pages([_page()])]

    full = await parse_insert_baseline(database_url, pages)
    events_only = await parse_insert_baseline(database_url, pages, with_blocks=False)

    # Two calendars of three events; busy: the single one and four weekly occurrences.
    assert (full.events, full.blocks) == (6, 10)
    assert (events_only.events, events_only.blocks) == (6, 0)
    async with engine.connect() as conn:
        for table in (calendar_events, busy_blocks):
            left = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            assert left == 0, table.name
