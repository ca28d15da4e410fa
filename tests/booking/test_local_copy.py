"""A booking made while a full sync is being built is not lost when that sync's copy replaces
the old one: free/busy from the cache shows it before and after the switch."""

from __future__ import annotations

from sqlalchemy import update

from gateway.db.schema import calendars
from gateway.google.calendar import CalendarClient
from gateway.http.appkeys import TOKENS_KEY
from gateway.sync.engine import SyncEngine
from gateway.sync.store import SyncStore
from tests.support.availability import ALICE, at, call, connect, day, event, sync, z
from tests.support.booking import book, slot
from tests.support.stack import Stack


async def test_a_booking_during_a_full_sync_survives_the_switch(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    for hour in ("08:00", "12:00", "15:00"):
        event(stack, ALICE, at(d, hour), at(d, hour.replace(":00", ":30")))
    [calendar_id] = await sync(stack, alice)
    stack.google.calendars.max_page_items = 2  # the rebuild lists two pages
    booked: list[int] = []

    async def book_after_the_last_page(kind: str, page: int) -> None:
        # Google was listed completely before this booking: the new copy cannot have it.
        if kind == "full" and page == 2 and not booked:
            answer = await book(stack, alice, slot(d), key="k-during-sync")
            booked.append(answer.status)

    client = await CalendarClient.create(stack.http, stack.settings.google_calendar_api_url)
    rebuilder = SyncEngine(
        store=SyncStore(stack.engine),
        client=client,
        tokens=stack.app[TOKENS_KEY],
        page_hook=book_after_the_last_page,
    )
    async with stack.engine.begin() as conn:  # the next sync is a full one
        await conn.execute(update(calendars).values(sync_token=None))
    outcome = await rebuilder.sync_calendar(calendar_id)
    assert outcome.full and outcome.pages == 2 and booked == [201]

    window = {"time_min": z(at(d, "09:00")), "time_max": z(at(d, "11:00"))}
    answer = await call(stack, "GET", f"/v1/integrations/{alice}/freebusy", params=window)
    assert answer.body["source"] == "cache", answer.body
    assert answer.body["busy"] == [{"start": z(at(d, "10:00")), "end": z(at(d, "10:30"))}]
