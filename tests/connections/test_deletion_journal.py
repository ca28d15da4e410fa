"""The deletion journal: its MAC chain (every kind of tampering named by file and line), torn
writes, and the promise it exists for: restoring a database backup taken before a disconnect
brings nothing back, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.audit import AuditLog
from gateway.connections.journal import DeletionJournal, JournalBroken
from gateway.connections.model import PURPOSE_ACCESS_TOKEN, PURPOSE_REFRESH_TOKEN
from gateway.db.engine import create_engine, sqlite_path
from gateway.db.schema import calendars, integrations, vault_data_keys
from gateway.http.appkeys import SYNC_KEY
from gateway.settings import Settings
from gateway.wiring import open_vault
from tests.support.availability import ALICE, connect, sync
from tests.support.cli import run_cli
from tests.support.databases import fresh_database_url
from tests.support.stack import Stack
from vault.envelope import SealContext
from vault.errors import VaultError

KEY = bytes(range(32))
AT = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


async def journal_with(path: Path, n: int, key: bytes = KEY) -> DeletionJournal:
    journal = DeletionJournal(path, key)
    for i in range(n):
        await journal.append("acme", f"int_{i:024x}", AT)
    return journal


# -- the chain ---------------------------------------------------------------------------------


async def test_entries_read_back_in_order_and_incrementally(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    writer = await journal_with(path, 3)
    reader = DeletionJournal(path, KEY)
    assert [e.integration_id for e in await reader.read_new()] == [
        f"int_{i:024x}" for i in range(3)
    ]
    await writer.append("globex", "int_new", AT)
    assert [(e.seq, e.tenant_id) for e in await reader.read_new()] == [(4, "globex")]
    assert await reader.read_new() == []
    assert path.stat().st_mode & 0o777 == 0o600


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _edit(line: str, **changes: object) -> str:
    doc = json.loads(line)
    doc.update(changes)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"


TAMPERING = {
    "edited": (lambda ls: [ls[0], _edit(ls[1], integration_id="int_other"), *ls[2:]], 2),
    "removed": (lambda ls: [ls[0], *ls[2:]], 2),
    "inserted": (lambda ls: [ls[0], ls[0], *ls[1:]], 2),
    "reordered": (lambda ls: [ls[1], ls[0], *ls[2:]], 1),
    "garbage": (lambda ls: [ls[0], "not json\n", *ls[1:]], 2),
    "first removed": (lambda ls: ls[1:], 1),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
async def test_every_tampering_is_named_by_file_and_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "journal.jsonl"
    await journal_with(path, 3)
    change, line = TAMPERING[kind]
    path.write_text("".join(change(_lines(path))))

    with pytest.raises(JournalBroken) as caught:
        await DeletionJournal(path, KEY).read_new()

    message = str(caught.value)
    assert f"{path} line {line}:" in message and "\n" not in message


async def test_another_key_does_not_verify(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    await journal_with(path, 2)
    with pytest.raises(JournalBroken, match="line 1"):
        await DeletionJournal(path, bytes(32)).read_new()


async def test_an_older_copy_put_back_under_a_running_reader_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    await journal_with(path, 1)
    old = path.read_bytes()
    reader = DeletionJournal(path, KEY)
    await reader.read_new()
    await journal_with(path, 1)  # one more entry (the writer continues the chain)
    await reader.read_new()
    path.write_bytes(old)
    with pytest.raises(JournalBroken, match="shorter"):
        await reader.read_new()


async def test_a_torn_last_line_is_ignored_then_replaced_by_the_next_append(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.jsonl"
    await journal_with(path, 2)
    with path.open("a") as fh:
        fh.write('{"seq":3,"at":"2026-')  # a crash in the middle of an append
    assert len(await DeletionJournal(path, KEY).read_new()) == 2

    await DeletionJournal(path, KEY).append("acme", "int_after", AT)

    entries = await DeletionJournal(path, KEY).read_new()
    assert [e.seq for e in entries] == [1, 2, 3] and entries[2].integration_id == "int_after"


# -- start-up ----------------------------------------------------------------------------------


async def test_a_broken_journal_stops_serve_with_one_line(stack: Stack, tmp_path: Path) -> None:
    alice = await connect(stack, ALICE)
    async with stack.http.delete(
        stack.url(f"/v1/integrations/{alice}"), headers=stack.auth()
    ) as response:
        assert response.status == 200
    path = stack.settings.deletion_journal_path
    path.write_text(_edit(path.read_text(), tenant_id="globex"))

    result = await asyncio.to_thread(
        run_cli,
        "serve",
        "--port",
        "0",
        cwd=tmp_path,
        env={
            "GATEWAY_DATABASE_URL": stack.settings.database_url,
            "GATEWAY_KEK_URI": stack.settings.kek_uri,
        },
    )

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("calendar-gateway")]
    assert "Traceback" not in result.stderr
    assert errors == [
        f"calendar-gateway: error: deletion journal {path} line 1: the MAC chain is broken "
        "(edited, inserted, removed or another key); refusing to start (restore the newest copy "
        "of the journal; see docs/operations.md)"
    ], result.stderr
    assert "listening" not in result.stdout


async def test_an_older_journal_put_back_under_a_newer_database_stops_start_up(
    stack: Stack,
) -> None:
    for user_id in ("u-1", "u-2"):
        integration_id = await connect(stack, ALICE, user_id=user_id)
        async with stack.http.delete(
            stack.url(f"/v1/integrations/{integration_id}"), headers=stack.auth()
        ) as response:
            assert response.status == 200
        if user_id == "u-1":
            old = stack.settings.deletion_journal_path.read_bytes()
    path = stack.settings.deletion_journal_path
    path.write_bytes(old)  # the journal as it was after the first disconnect only

    with pytest.raises(JournalBroken) as caught:
        async with restored_gateway(stack.settings):
            pass

    assert str(caught.value).startswith(
        f"deletion journal {path} line 2: entry 2 is missing although the database recorded it"
    )


# -- backup, disconnect, restore -----------------------------------------------------------------


def _libpq(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def backup(stack: Stack, tmp_path: Path) -> AsyncIterator[str]:
    """A copy of the stack's database as it is now; yields its URL."""
    source = sqlite_path(stack.settings.database_url)
    if source is not None:
        target = tmp_path / "backup.db"

        def copy() -> None:
            with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
                src.backup(dst)  # what `sqlite3 gateway.db ".backup ..."` does

        await asyncio.to_thread(copy)
        yield f"sqlite+aiosqlite:///{target}"
        return
    async with fresh_database_url("postgres", tmp_path) as url:

        def dump_and_restore() -> None:
            dump = subprocess.run(
                ["pg_dump", "--no-owner", _libpq(stack.settings.database_url)],
                capture_output=True,
                check=True,
            )
            subprocess.run(
                ["psql", "-q", "-v", "ON_ERROR_STOP=1", _libpq(url)],
                input=dump.stdout,
                capture_output=True,
                check=True,
            )

        await asyncio.to_thread(dump_and_restore)
        yield url


@asynccontextmanager
async def restored_gateway(
    settings: Settings,
) -> AsyncIterator[tuple[str, AsyncEngine, web.Application]]:
    """A gateway started on the restored database."""
    engine = await create_engine(settings.database_url)
    app = create_app(settings, engine=engine)
    server = TestServer(app, host="127.0.0.1", port=0)
    try:
        await server.start_server()
        try:
            yield str(server.make_url("")).rstrip("/"), engine, app
        finally:
            await server.close()
    finally:
        await engine.dispose()


async def test_a_restored_backup_does_not_bring_a_disconnected_integration_back(
    stack: Stack, tmp_path: Path
) -> None:
    alice = await connect(stack, ALICE)
    await sync(stack, alice)
    async for backup_url in backup(stack, tmp_path):
        # The backup holds the integration, active, with its sealed tokens and data key.
        backup_engine = await create_engine(backup_url)
        async with backup_engine.connect() as conn:
            row = (
                (await conn.execute(select(integrations).where(integrations.c.id == alice)))
                .mappings()
                .one()
            )
        await backup_engine.dispose()
        assert row["status"] == "active" and row["refresh_token"] is not None

        async with stack.http.delete(
            stack.url(f"/v1/integrations/{alice}"), headers=stack.auth()
        ) as response:
            assert response.status == 200

        # Restore: the backup becomes the database; the keyring and the journal stay.
        mark = max((r.seq for r in stack.google.inspector.records), default=0)
        settings = stack.settings.model_copy(update={"database_url": backup_url})
        async with restored_gateway(settings) as (base_url, engine, app):
            async with stack.http.get(
                f"{base_url}/v1/integrations/{alice}", headers=stack.auth()
            ) as response:
                assert response.status == 200
                assert (await response.json())["status"] == "disconnected"
            async with stack.http.get(
                f"{base_url}/v1/integrations/{alice}/freebusy",
                params={"time_min": "2030-01-01T00:00:00Z", "time_max": "2030-01-02T00:00:00Z"},
                headers=stack.auth(),
            ) as response:
                assert response.status == 409, await response.text()

            async with engine.connect() as conn:
                restored = (
                    (await conn.execute(select(integrations).where(integrations.c.id == alice)))
                    .mappings()
                    .one()
                )
                keys = await conn.scalar(
                    select(func.count())
                    .select_from(vault_data_keys)
                    .where(vault_data_keys.c.integration_id == alice)
                )
                cals = await conn.scalar(
                    select(func.count())
                    .select_from(calendars)
                    .where(calendars.c.integration_id == alice)
                )
            assert restored["refresh_token"] is None and restored["access_token"] is None
            assert keys == 0 and cals == 0
            entries = await AuditLog(engine).entries(integration_id=alice)
            assert entries[-1].action == "reshredded_after_restore"

            # The backup's sealed tokens open nowhere any more.
            vault = await open_vault(settings, engine)
            try:
                for purpose in (PURPOSE_REFRESH_TOKEN, PURPOSE_ACCESS_TOKEN):
                    with pytest.raises(VaultError):
                        await vault.open(SealContext("acme", alice, purpose), row[purpose])
            finally:
                await vault.close()
            # What the sync scheduler would do for it: nothing to sync, Google not asked.
            assert await app[SYNC_KEY].ensure_calendars(alice) == []

        # Google saw nothing from the restored gateway: no refresh, no call with old tokens.
        seen = [(r.endpoint, r.path) for r in stack.google.inspector.requests(since_seq=mark)]
        assert seen == []
