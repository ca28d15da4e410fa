"""A gateway process killed between Google's success and its own bookkeeping: the booking is
retried through a restarted process with the same Idempotency-Key and Google holds ONE event.

`python -m gateway serve` books; the emulator applies the insert and holds its answer back; the
process is SIGKILLed while waiting (its booking row says `pending`); a new process is started on
the same database and the client retries: the gateway asks Google for the derived event id
instead of booking again. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from sqlalchemy import select

from gateway.booking.idempotency import google_event_id
from gateway.db.schema import bookings
from tests.support.availability import ALICE, connect, day
from tests.support.booking import events_path, gateway_events, inserts, slot
from tests.support.processes import serve_process, until
from tests.support.stack import Stack


async def test_a_crash_after_googles_success_books_one_event(stack: Stack, tmp_path: Path) -> None:
    alice = await connect(stack, ALICE)
    body = slot(day(7))
    headers = {**stack.auth(), "Idempotency-Key": "crash-1"}
    hold = stack.google.inject_fault(after_delay_s=60, endpoint="events.insert")

    async with serve_process(stack, tmp_path, "first", GATEWAY_SYNC_WORKER="false") as first:
        url = first.url(events_path(alice))
        attempt = asyncio.create_task(stack.http.post(url, json=body, headers=headers))

        async def applied_at_google() -> bool:
            return hold.applied == 1 and len(gateway_events(stack, ALICE)) == 1

        await until(applied_at_google, timeout_s=120)
        # Google created the event; the gateway is waiting for the answer: kill it now.
    try:
        await attempt
    except aiohttp.ClientError:
        pass  # the connection died with the process: the outcome is unknown to the client
    else:
        raise AssertionError("the killed gateway answered")
    async with stack.engine.connect() as conn:
        states = list((await conn.execute(select(bookings.c.state))).scalars())
    assert states == ["pending"]

    async with (
        serve_process(stack, tmp_path, "restarted", GATEWAY_SYNC_WORKER="false") as restarted,
        stack.http.post(restarted.url(events_path(alice)), json=body, headers=headers) as r,
    ):
        assert r.status == 201, await r.text()
        assert r.headers["Idempotent-Replayed"] == "true"
        answer = await r.json()
    assert answer["id"] == google_event_id("acme", alice, "crash-1")
    [created] = gateway_events(stack, ALICE)
    assert created["id"] == answer["id"]
    assert len(inserts(stack)) == 1  # the retry looked the event up instead of inserting
    async with stack.engine.connect() as conn:
        states = list((await conn.execute(select(bookings.c.state))).scalars())
    assert states == ["created"]
