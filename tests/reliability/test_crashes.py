"""Crash tests: a gateway process killed with SIGKILL in the middle of its work, then restarted.

- a full sync of a large calendar (many pages), killed between pages: until the copy is
  complete the agent is never answered from a partial copy (nor told an empty calendar is
  free); after restart the copy is complete and equal to Google's truth;
- a disconnect, killed while the revocation at Google hangs: after restart the job completes
  (grant revoked, no token, no key, no synced record) and its receipt is served;
- a `keys rewrap`, killed between batches: `keys status` stays consistent, a second run
  completes it, and every token still opens.

The killed and the restarted gateways are real `calendar-gateway serve` (or `keys`)
processes on the test's database and keyring; the Google emulator runs in the test.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from emulator.seed import seed_calendar
from gateway.clock import rfc3339
from gateway.db.engine import sqlite_path
from gateway.db.schema import (
    busy_blocks,
    calendar_events,
    calendars,
    integrations,
    vault_data_keys,
    watch_channels,
)
from gateway.http.appkeys import SYNC_KEY
from gateway.sync.store import SyncStore
from tests.reliability.truth import assert_converged, gateway_freebusy, google_busy, windows
from tests.support.cli import run_cli, status_rows
from tests.support.disconnect import Connected, assert_destroyed, key_row, revoke_calls
from tests.support.processes import expire_leases, serve_process, until
from tests.support.scheduler import event
from tests.support.stack import ALICE, ALICE_SUB, EmulatorSecrets, Stack, start_stack
from vault.cache import DekCache
from vault.envelope import SealContext
from vault.keyring import LocalKeyringProvider
from vault.service import Vault
from vault.store import SqlDekStore

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def stack(
    engine: AsyncEngine,
    database_url: str,
    tmp_path: Path,
    backend: str,
    emulator_secrets: EmulatorSecrets,
) -> AsyncIterator[Stack]:
    """The suite's stack, but on SQLite its gateway keeps no availability index: these tests
    run `serve` children on the same file beside it, which the product refuses (one serve per
    SQLite file) and which an index in this process would not hear about."""
    overrides = {"index_memory_mb": 0} if backend == "sqlite" else {}
    async for running in start_stack(
        engine, database_url, tmp_path, emulator_secrets=emulator_secrets, **overrides
    ):
        yield running


# -- a sync ------------------------------------------------------------------------------------


async def test_a_sync_killed_between_pages_is_completed_after_restart(
    stack: Stack, tmp_path: Path
) -> None:
    google = stack.google.calendars.ensure_user(ALICE)
    seed_calendar(stack.google.calendars, google, seed=11, count=600)
    stack.google.calendars.max_page_items = 50  # many pages
    integration_id = (await stack.connect(ALICE, user_id="u-crash-sync"))["integration_id"]
    # Discovery's one-item events.list, then five pages of the full sync pass; the sixth hangs.
    stack.google.inject_fault(delay_s=0.01, times=6, user=ALICE, endpoint="events.list")
    hang = stack.google.inject_fault(delay_s=60, times=1, user=ALICE, endpoint="events.list")
    lo, hi = windows(datetime.now(UTC))[0]
    truth = google_busy(stack, ALICE, lo, hi)
    assert len(truth) > 20

    async def no_partial_answer() -> None:
        # The agent asks meanwhile (the test's own gateway, another replica): the partial copy
        # is never used; Google is asked live and the answer is complete and true.
        answer = await gateway_freebusy(stack, integration_id, lo, hi)
        assert answer["source"] == "google" and answer["busy"] == truth, answer["source"]

    async with serve_process(stack, tmp_path, "killed-mid-sync") as child:

        async def hanging() -> bool:
            return hang.applied == 1

        await until(hanging)
        async with stack.engine.connect() as conn:
            [row] = (await conn.execute(select(calendars))).mappings().all()
            written = (
                await conn.execute(
                    select(func.count()).where(calendar_events.c.calendar_id == row["id"])
                )
            ).scalar_one()
        assert row["lease_owner"] is not None and row["active_generation"] is None
        assert written >= 200, "five pages are stored, in a generation nobody reads yet"
        await no_partial_answer()
        await child.kill()
    await no_partial_answer()

    # Before the restart, meetings the dead process had already stored are cancelled at
    # Google: the restarted sync must not resurrect them from the dead run's leftovers.
    async with stack.engine.connect() as conn:
        stored = (
            (
                await conn.execute(
                    select(calendar_events.c.event_id)
                    .where(
                        calendar_events.c.calendar_id == row["id"],
                        calendar_events.c.recurrence.is_(None),
                        calendar_events.c.recurring_event_id.is_(None),
                        calendar_events.c.status == "confirmed",
                        calendar_events.c.transparency == "opaque",
                        calendar_events.c.start_at >= lo,
                        calendar_events.c.end_at <= hi,
                    )
                    .limit(3)
                )
            )
            .scalars()
            .all()
        )
    assert len(stored) == 3
    for event_id in stored:
        stack.google.calendars.delete_event(google, event_id)

    # Restarted (the dead process's lease has run out): the sync is redone to the end.
    await expire_leases(stack.engine)
    async with serve_process(stack, tmp_path, "restarted-sync"):
        await until(functools.partial(synced_generation, stack, 1), timeout_s=60)
        compared = await assert_converged(stack, integration_id, ALICE)
        assert compared > 200
        async with stack.engine.connect() as conn:
            ghosts = (
                await conn.execute(
                    select(func.count()).where(
                        busy_blocks.c.calendar_id == row["id"], busy_blocks.c.event_id.in_(stored)
                    )
                )
            ).scalar_one()
        assert ghosts == 0, "a meeting cancelled while the process was down still blocks time"

        # Google drops the sync token (410) and the calendar changes: the rebuild into a new
        # generation is killed half-way too. Readers keep the last complete copy meanwhile.
        before = google_busy(stack, ALICE, lo, hi)
        stack.google.calendars.invalidate_sync_tokens(ALICE)
        # The 410 answer and five pages of the full resync pass; the next page hangs.
        stack.google.inject_fault(delay_s=0.01, times=6, user=ALICE, endpoint="events.list")
        hang = stack.google.inject_fault(delay_s=60, times=1, user=ALICE, endpoint="events.list")
        gap = free_gap(before)
        stack.google.calendars.insert_event(
            google, event("fresh410", rfc3339(gap), rfc3339(gap + timedelta(hours=1)))
        )
        assert google_busy(stack, ALICE, lo, hi) != before
        assert await SyncStore(stack.engine).request_sync(row["id"], datetime.now(UTC))

        await until(hanging)
        await old_copy_answered(stack, integration_id, lo, hi, before)
    await old_copy_answered(stack, integration_id, lo, hi, before)

    await expire_leases(stack.engine)
    async with serve_process(stack, tmp_path, "restarted-again"):
        await until(functools.partial(synced_generation, stack, 2), timeout_s=60)
    await assert_converged(stack, integration_id, ALICE)  # the change made it in


async def synced_generation(stack: Stack, generation: int) -> bool:
    async with stack.engine.connect() as conn:
        row = (await conn.execute(select(calendars))).mappings().one()
    return bool(
        row["state"] == "synced"
        and row["active_generation"] == generation
        and row["lease_owner"] is None
    )


async def old_copy_answered(
    stack: Stack, integration_id: str, lo: datetime, hi: datetime, before: list[dict[str, str]]
) -> None:
    """The last complete copy answers (stale by one change, never empty or partial)."""
    async with stack.engine.connect() as conn:
        active = (await conn.execute(select(calendars.c.active_generation))).scalar_one()
    assert active == 1
    answer = await gateway_freebusy(stack, integration_id, lo, hi)
    assert answer["source"] == "cache" and answer["busy"] == before


def free_gap(busy: list[dict[str, str]]) -> datetime:
    """The start of a free hour (between two busy periods) in `busy`."""
    for one, two in itertools.pairwise(busy):
        end, start = datetime.fromisoformat(one["end"]), datetime.fromisoformat(two["start"])
        if start - end >= timedelta(hours=3):
            return end + timedelta(hours=1)
    raise AssertionError("no free hour")


# -- a disconnect ------------------------------------------------------------------------------


async def test_a_disconnect_killed_mid_revocation_completes_after_restart(
    stack: Stack, tmp_path: Path
) -> None:
    google = stack.google.calendars.ensure_user(ALICE)
    stack.google.calendars.insert_event(
        google, event("secret01", "2026-12-02T09:00:00Z", "2026-12-02T10:00:00Z")
    )
    integration_id = (await stack.connect(ALICE, user_id="u-crash-dc"))["integration_id"]
    sync = stack.app[SYNC_KEY]
    [calendar] = await sync.ensure_calendars(integration_id)
    assert (await sync.sync_calendar(calendar.id)).status == "synced"
    c = await _connected(stack, integration_id)
    # Google's revocation endpoint hangs: the job stops between "marked" and "revoked".
    hang = stack.google.inject_fault(delay_s=60, times=1, endpoint="revoke")

    off = {"GATEWAY_SYNC_WORKER": "false", "GATEWAY_PUSH_ENABLED": "false"}
    async with serve_process(stack, tmp_path, "killed-mid-disconnect", **off) as child:
        url = child.url(f"/v1/integrations/{integration_id}")
        request = asyncio.create_task(stack.http.delete(url, headers=stack.auth()))

        async def revoking() -> bool:
            return hang.applied == 1

        await until(revoking)
        async with stack.engine.connect() as conn:
            row = (
                (await conn.execute(select(integrations).where(integrations.c.id == c.id)))
                .mappings()
                .one()
            )
        assert row["status"] == "disconnecting" and row["disconnect_lease_owner"] is not None
        await child.kill()
        with pytest.raises(aiohttp.ClientConnectionError):
            await request  # the connection died with the process
    assert stack.google.revoked_grants(ALICE) == []

    await expire_leases(stack.engine)
    async with serve_process(stack, tmp_path, "restarted-disconnect", **off) as restarted:
        # Its resumer finishes the job at startup, without any request.
        async def disconnected() -> bool:
            async with stack.engine.connect() as conn:
                status = (
                    await conn.execute(
                        select(integrations.c.status).where(integrations.c.id == c.id)
                    )
                ).scalar_one()
            return bool(status == "disconnected")

        await until(disconnected)
        async with stack.http.delete(
            restarted.url(f"/v1/integrations/{integration_id}"), headers=stack.auth()
        ) as response:
            assert response.status == 200
            receipt = await response.json()
    assert receipt["revoked_at_google"] is True and receipt["tokens_destroyed"] is True
    assert receipt["records_purged"] >= 2  # the calendar and its event
    assert [g.revoked_by for g in stack.google.revoked_grants(ALICE)] == ["revoke_endpoint"]
    assert revoke_calls(stack, status=200) == 1
    await assert_destroyed(stack, c)
    for table, column in (
        (calendars, calendars.c.integration_id),
        (watch_channels, watch_channels.c.integration_id),
    ):
        async with stack.engine.connect() as conn:
            left = (await conn.execute(select(func.count()).where(column == c.id))).scalar_one()
        assert left == 0, table.name
    async with stack.engine.connect() as conn:
        for table in (calendar_events, busy_blocks):
            left = (
                await conn.execute(select(func.count()).where(table.c.calendar_id == calendar.id))
            ).scalar_one()
            assert left == 0, table.name


async def _connected(stack: Stack, integration_id: str) -> Connected:
    """What must disappear: the sealed blobs and the wrapped key as the connect flow stored
    them, and the tokens Google issued."""
    async with stack.engine.connect() as conn:
        row = (
            (await conn.execute(select(integrations).where(integrations.c.id == integration_id)))
            .mappings()
            .one()
        )
    key = await key_row(stack.engine, integration_id)
    assert key is not None
    [grant] = [g for g in stack.google.grants.values() if g.sub == ALICE_SUB]
    assert grant.refresh_token is not None
    return Connected(
        id=integration_id,
        tenant_id=row["tenant_id"],
        refresh_token=grant.refresh_token,
        access_token="",
        refresh_blob=bytes(row["refresh_token"]),
        access_blob=bytes(row["access_token"]),
        wrapped_key=bytes(key["wrapped"]),
    )


# -- a rewrap ----------------------------------------------------------------------------------

KEYS = 400


@asynccontextmanager
async def writes_blocked(engine: AsyncEngine, database_url: str) -> AsyncIterator[None]:
    """Hold the database's write lock (SQLite) or an exclusive table lock on the data keys
    (PostgreSQL): the rewrap's next batch waits, so the kill lands between batches."""
    path = sqlite_path(database_url)
    if path is not None:
        con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        await asyncio.to_thread(con.execute, "BEGIN IMMEDIATE")
        try:
            yield
        finally:
            await asyncio.to_thread(con.execute, "ROLLBACK")
            con.close()
        return
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    pg = await asyncpg.connect(dsn)
    try:
        async with pg.transaction():
            await pg.execute("LOCK TABLE vault_data_keys IN EXCLUSIVE MODE")
            yield
    finally:
        await pg.close()


async def _versions(engine: AsyncEngine) -> dict[int, int]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(vault_data_keys.c.kek_version, func.count()).group_by(
                    vault_data_keys.c.kek_version
                )
            )
        ).all()
    return {int(v): int(n) for v, n in rows}


async def test_a_rewrap_killed_between_batches_completes_on_the_next_run(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    keyring = tmp_path / "keyring.json"
    env = {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_KEK_URI": f"file:{keyring}",
    }
    provider = await LocalKeyringProvider.open(keyring, reload_interval_s=0)
    vault = Vault(provider, SqlDekStore(engine, vault_data_keys), DekCache(max_size=0))
    sealed: dict[SealContext, bytes] = {}

    async def one(i: int) -> None:
        ctx = SealContext(tenant_id="acme", integration_id=f"int-{i:04}", purpose="refresh_token")
        await vault.ensure_data_key(ctx.tenant_id, ctx.integration_id)
        sealed[ctx] = await vault.seal(ctx, f"1//refresh-{i}".encode())

    for start in range(0, KEYS, 50):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 50, KEYS))))
    assert await vault.rotate() == 2

    rewrap = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "keys",
        "rewrap",
        "--batch-size",
        "1",
        cwd=tmp_path,
        env={**_cli_env(), **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def started() -> bool:
            assert rewrap.returncode is None, "the rewrap ended before it could be killed"
            return (await _versions(engine)).get(2, 0) > 0

        await until(started, timeout_s=60)
        async with writes_blocked(engine, database_url):
            await asyncio.sleep(0.2)  # its next write is waiting for the lock now
            rewrap.kill()
            await rewrap.wait()
    finally:
        if rewrap.returncode is None:
            rewrap.kill()
            await rewrap.wait()
    assert rewrap.returncode == -9
    moved = (await _versions(engine)).get(2, 0)
    assert 0 < moved < KEYS

    # Consistent meanwhile: every key under exactly one known version, nothing lost.
    status = await asyncio.to_thread(run_cli, "keys", "status", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    assert status_rows(status.stdout) == {1: ("active", KEYS - moved), 2: ("primary", moved)}

    again = await asyncio.to_thread(run_cli, "keys", "rewrap", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert f"rewrapped {KEYS - moved} data keys" in again.stdout
    assert await _versions(engine) == {2: KEYS}

    # Every token still opens, through a fresh vault that unwraps each key (no cache).
    fresh = await LocalKeyringProvider.open(keyring, reload_interval_s=0)
    reader = Vault(fresh, SqlDekStore(engine, vault_data_keys), DekCache(max_size=0))
    for ctx, blob in sealed.items():
        assert await reader.open(ctx, blob) == f"1//refresh-{int(ctx.integration_id[4:])}".encode()
    await fresh.close()
    await provider.close()


def _cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "GOOGLE_"))}
