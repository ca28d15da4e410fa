"""Graceful shutdown of `calendar-gateway serve` on SIGTERM (what an orchestrator sends before
it replaces a replica): new connections are refused at once, a request in flight completes
with its 200, the calendar being synced and the disconnect job being resumed are handed back
in the database (their leases released, not left to run out), and the process exits 0; a
request still running after GATEWAY_SHUTDOWN_TIMEOUT_S is cut and the stop completes. On
SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from sqlalchemy import RowMapping, select

from gateway.db.schema import calendars, integrations
from gateway.http.disconnect_routes import DISCONNECT_SERVICE_KEY
from tests.support.processes import serve_process, until
from tests.support.scheduler import event
from tests.support.stack import ALICE, DAVE, Stack

WINDOW = {"time_min": "2026-12-01T00:00:00Z", "time_max": "2026-12-08T00:00:00Z"}


async def test_sigterm_finishes_in_flight_work_releases_leases_and_exits_0(
    stack: Stack, tmp_path: Path
) -> None:
    google = stack.google.calendars.ensure_user(ALICE)
    stack.google.calendars.insert_event(
        google, event("meeting1", "2026-12-02T09:00:00Z", "2026-12-02T10:00:00Z")
    )
    integration_id = (await stack.connect(ALICE, user_id="u-term"))["integration_id"]
    # Dave's disconnect was requested by a process that died before revoking: the child's
    # resumer takes the job at startup, and Google's revocation endpoint hangs meanwhile.
    leaving = (await stack.connect(DAVE, user_id="u-term-dave"))["integration_id"]
    assert await stack.app[DISCONNECT_SERVICE_KEY].request("acme", leaving)
    revoke_hang = stack.google.inject_fault(delay_s=60, times=3, user=DAVE, endpoint="revoke")
    # The child's first full sync of Alice's calendar hangs for a while: it holds the lease.
    # (Discovery's own one-item events.list passes first: faults are taken in order.)
    stack.google.inject_fault(delay_s=0.01, times=1, user=ALICE, endpoint="events.list")
    sync_hang = stack.google.inject_fault(delay_s=3, times=1, user=ALICE, endpoint="events.list")
    # A live freeBusy question to Google is held at Google until the test lets it go: the
    # request is in flight at SIGTERM, and stays in flight until the listener has closed,
    # however slow the machine.
    google_answers = asyncio.Event()
    slow_google = stack.google.inject_fault(hold=google_answers, times=1, endpoint="freebusy.query")

    # The stop waits for the request in flight however slow the machine (the timeout that cuts
    # it is the next test's).
    async with serve_process(
        stack, tmp_path, "terminated", GATEWAY_SHUTDOWN_TIMEOUT_S="600"
    ) as child:

        async def syncing() -> bool:
            return sync_hang.applied == 1

        await until(syncing)
        async with stack.engine.connect() as conn:
            [owner] = (await conn.execute(select(calendars.c.lease_owner))).scalars().all()
        assert owner is not None, "the child holds the calendar's lease"

        async def revoking() -> bool:
            return revoke_hang.applied >= 1

        await until(revoking)
        assert f":{child.pid}:" in str((await job(stack, leaving))["disconnect_lease_owner"])

        async def ask_freebusy() -> tuple[int, dict[str, object]]:
            async with stack.http.get(
                child.url(f"/v1/integrations/{integration_id}/freebusy"),
                params={**WINDOW, "max_staleness_s": "0"},
                headers=stack.auth(),
            ) as response:
                return response.status, dict(await response.json())

        in_flight = asyncio.create_task(ask_freebusy())

        async def asked_google() -> bool:
            return slow_google.applied == 1

        await until(asked_google)
        await child.terminate()

        # New connections are refused while the request in flight is still being answered.
        # A new TCP connection each time, not the session's pool: a kept-alive connection
        # reused just as the server closes its idle ones can go unanswered until the
        # shutdown timeout (seen under load), which says nothing about the listener.
        address = urlsplit(child.base_url)

        async def refused() -> bool:
            try:
                _, writer = await asyncio.open_connection(address.hostname, address.port)
            except ConnectionRefusedError:
                return True
            writer.close()
            await writer.wait_closed()
            return False

        await until(refused, timeout_s=120)
        assert not in_flight.done(), (
            "the in-flight request was cut short: "
            f"{in_flight.exception() or in_flight.result()!r}\n{child.log_text()[-3000:]}"
        )
        google_answers.set()

        status, body = await asyncio.wait_for(in_flight, 60)
        assert status == 200, body
        assert body["busy"] == [{"start": "2026-12-02T09:00:00Z", "end": "2026-12-02T10:00:00Z"}]

        code = await asyncio.wait_for(child.process.wait(), 60)
        assert code == 0, child.log_text()[-2000:]

    # The lease is released in the database, not left for 60 s to run out: another process
    # can take the calendar at once. The sync in flight finished within the stop grace.
    async with stack.engine.connect() as conn:
        row = (await conn.execute(select(calendars))).mappings().one()
    assert row["lease_owner"] is None and row["lease_until"] is None
    assert row["state"] == "synced"
    # The disconnect it was running is handed back too (not left for its 60 s lease to run
    # out): still durable, at the step it had reached, for the next process to finish.
    left = await job(stack, leaving)
    assert left["status"] == "disconnecting"
    assert left["disconnect_step"] == 2  # channels stopped; the revocation (3) was cut short
    assert stack.google.revoked_grants(DAVE) == []
    assert f":{child.pid}:" not in str(left["disconnect_lease_owner"])


async def test_a_request_still_in_flight_at_the_shutdown_timeout_is_cut_and_the_stop_completes(
    stack: Stack, tmp_path: Path
) -> None:
    """An orchestrator kills a replica that outlives its grace period (Kubernetes: 30 s), and
    then nothing is handed back. With GATEWAY_SHUTDOWN_TIMEOUT_S the stop cuts a request that
    is still running then (here one whose Google call never answers) and goes on to exit 0,
    instead of waiting for the request (aiohttp's own default waits 60 s, and the gateway's
    Google timeout would have answered it with an error after 20 s)."""
    google = stack.google.calendars.ensure_user(ALICE)
    stack.google.calendars.insert_event(
        google, event("meeting1", "2026-12-02T09:00:00Z", "2026-12-02T10:00:00Z")
    )
    integration_id = (await stack.connect(ALICE, user_id="u-cut"))["integration_id"]
    never = asyncio.Event()
    held = stack.google.inject_fault(hold=never, times=1, endpoint="freebusy.query")
    try:
        async with serve_process(stack, tmp_path, "cut", GATEWAY_SHUTDOWN_TIMEOUT_S="1") as child:

            async def ask_freebusy() -> int:
                async with stack.http.get(
                    child.url(f"/v1/integrations/{integration_id}/freebusy"),
                    params={**WINDOW, "max_staleness_s": "0"},
                    headers=stack.auth(),
                ) as response:
                    return response.status

            in_flight = asyncio.create_task(ask_freebusy())

            async def asked_google() -> bool:
                return held.applied == 1

            await until(asked_google)
            await child.terminate()
            code = await asyncio.wait_for(child.process.wait(), 60)
            assert code == 0, child.log_text()[-2000:]
            with pytest.raises(aiohttp.ClientConnectionError):
                await asyncio.wait_for(in_flight, 60)
    finally:
        never.set()


async def job(stack: Stack, integration_id: str) -> RowMapping:
    async with stack.engine.connect() as conn:
        return (
            (await conn.execute(select(integrations).where(integrations.c.id == integration_id)))
            .mappings()
            .one()
        )
