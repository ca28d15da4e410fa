"""Expanding a large calendar's busy time does not hold the event loop: API requests are
answered while it runs (the expansion is held at a hook until one has been)."""

from __future__ import annotations

import asyncio
import threading

from emulator.seed import seed_calendar
from gateway.google.calendar import CalendarClient
from gateway.http.appkeys import TOKENS_KEY
from gateway.sync.engine import SyncEngine
from gateway.sync.store import SyncStore
from tests.support.availability import ALICE, at, call, connect, day, z
from tests.support.stack import Stack

# Only a guard against hanging forever when the expansion does block the loop (then the API
# request below cannot run until the hook gives up): the test never waits this long otherwise.
DEADLOCK_GUARD_S = 60


async def test_an_api_request_is_answered_while_a_large_calendar_is_expanded(
    stack: Stack,
) -> None:
    alice = await connect(stack, ALICE)
    google = stack.google.calendars
    seed_calendar(google, google.ensure_user(ALICE), seed=5, count=1_000)
    loop = asyncio.get_running_loop()
    expanding = asyncio.Event()
    answered = threading.Event()
    held: list[tuple[bool, bool]] = []

    def hold(calendar_id: str) -> None:
        # Runs where the expansion runs. On the event loop, the request below could not be
        # served until this returned: `answered` would never be set in time.
        on_loop = threading.get_ident() == loop_thread
        loop.call_soon_threadsafe(expanding.set)
        held.append((on_loop, answered.wait(DEADLOCK_GUARD_S)))

    loop_thread = threading.get_ident()
    client = await CalendarClient.create(stack.http, stack.settings.google_calendar_api_url)
    engine = SyncEngine(
        store=SyncStore(stack.engine),
        client=client,
        tokens=stack.app[TOKENS_KEY],
        expansion_hook=hold,
    )
    [calendar] = await engine.ensure_calendars(alice)
    syncing = asyncio.create_task(engine.sync_calendar(calendar.id))
    await expanding.wait()

    d = day(7)
    window = {"time_min": z(at(d, "09:00")), "time_max": z(at(d, "17:00"))}
    answer = await call(stack, "GET", f"/v1/integrations/{alice}/freebusy", params=window)
    assert answer.status == 200, answer.body
    answered.set()

    outcome = await syncing
    assert outcome.status == "synced" and outcome.changes > 900
    assert held == [(False, True)]
