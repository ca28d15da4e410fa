"""Two gateway processes (each its own database pool, token manager, sync engine, availability
and booking service) book one slot at the same time on PostgreSQL: the advisory slot lock lets
exactly one succeed; the other sees the first one's event and is SlotBusy. (SQLite deployments
are one process, where the service's asyncio lock does it: tests/api/test_events.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from gateway.availability.service import AvailabilityService
from gateway.booking.errors import SlotBusy
from gateway.booking.request import parse_booking
from gateway.booking.service import BookingResult, BookingService
from gateway.booking.store import BookingStore
from gateway.connections.model import Integration
from gateway.google.calendar import CalendarClient
from gateway.sync.engine import SyncEngine
from gateway.sync.store import SyncStore
from tests.support.availability import ALICE, at, connect, day
from tests.support.booking import gateway_events
from tests.support.processes import process
from tests.support.stack import Stack


@asynccontextmanager
async def booking_process(stack: Stack) -> AsyncIterator[tuple[BookingService, Integration]]:
    async with process(stack) as proc:
        client = await CalendarClient.create(stack.http, stack.settings.google_calendar_api_url)
        sync = SyncEngine(
            store=SyncStore(proc.db),
            client=client,
            tokens=proc.tokens,
        )
        availability = AvailabilityService(sync=sync, client=client, tokens=proc.tokens)
        service = BookingService(
            store=BookingStore(proc.db),
            client=client,
            tokens=proc.tokens,
            sync=sync,
            availability=availability,
            max_staleness=timedelta(seconds=30),
        )
        [integration] = await proc.integrations.list_for_user("acme", None)
        yield service, integration


@pytest.mark.parametrize("backend", ["postgres"])
async def test_two_processes_cannot_both_book_one_slot(stack: Stack) -> None:
    await connect(stack, ALICE)
    d = day(7)
    request = parse_booking(summary="Intro", start=at(d, "10:00"), end=at(d, "10:30"))
    # Each insert answers late: without the lock both checks would pass before either insert.
    stack.google.inject_fault(delay_s=0.3, times=2, endpoint="events.insert")
    async with booking_process(stack) as (one, integration), booking_process(stack) as (two, _):

        async def attempt(service: BookingService, key: str) -> BookingResult | SlotBusy:
            try:
                return await service.book(integration, "acme", key, request)
            except SlotBusy as exc:
                return exc

        results = await asyncio.gather(attempt(one, "proc-a"), attempt(two, "proc-b"))
    booked = [r for r in results if isinstance(r, BookingResult)]
    refused = [r for r in results if isinstance(r, SlotBusy)]
    assert len(booked) == 1 and len(refused) == 1, results
    assert refused[0].extra["conflicts"] == [
        {"start": booked[0].event.to_json()["start"], "end": booked[0].event.to_json()["end"]}
    ]
    assert len(gateway_events(stack, ALICE)) == 1
