"""Fixtures shared by the whole suite."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from tests.support.databases import BACKENDS, drop_templates, fresh_database_url
from tests.support.stack import (
    EmulatorSecrets,
    LogCapture,
    Stack,
    assert_no_secret_logged,
    start_stack,
)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the migrated templates this process made (tests/support/databases.py)."""
    asyncio.run(drop_templates())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """schemathesis's `schema.parametrize()` (tests/reliability/test_api_fuzz.py) makes one item
    per API operation, all with the test function's node id (the operation is only in the
    item's name). pytest-xdist tells items apart by node id and would run just one of them:
    give each item the id its name implies (pytest >= 9 keeps it as a structured `_id`)."""
    for item in items:
        if item.parent is None:
            continue
        implied = f"{item.parent.nodeid}::{item.name}"
        if item.nodeid != implied:
            if hasattr(item, "_id"):
                item._id = type(item._id).parse(implied)
            else:
                item._nodeid = implied


@pytest.fixture(scope="session")
def emulator_secrets() -> EmulatorSecrets:
    """Every emulator this worker's tests start registers here (`start_stack` and the emulator
    fixtures take it), for the end-of-run log check below."""
    return EmulatorSecrets()


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log_line(emulator_secrets: EmulatorSecrets) -> Iterator[None]:
    """Every log record of the whole run, at every level, is kept; at the end none may hold a
    token, code or client secret that any emulator handed out (issue 4's promise)."""
    capture = LogCapture()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(capture)
    root.setLevel(previous)
    assert_no_secret_logged(capture.lines, emulator_secrets.all())


@pytest.fixture(autouse=True)
def no_log_handler_on_a_closed_stream() -> Iterator[None]:
    """A test must not leave the root logger writing to a stream that is closed after it (such
    as pytest's capture of sys.stderr, which `configure_logging` binds to when the CLI runs in
    this process: see tests/support/cli.py `main_in_process`): every later record, from any thread,
    would end in "Logging error ... I/O operation on closed file"."""
    yield
    stale = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False)
    ]
    assert not stale, f"root log handlers left on a closed stream: {stale}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Runs a test once on SQLite and once on PostgreSQL."""
    return str(request.param)


@pytest.fixture
async def database_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """URL of a new database on the current backend: empty (unmigrated), or already at head
    when the test also uses `engine` (copied from a migrated template: the same database
    `engine`'s migration would make, without running the migrations per test)."""
    migrated = "engine" in request.fixturenames
    async with fresh_database_url(backend, tmp_path, migrated=migrated) as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a new database migrated to head."""
    eng = await create_engine(database_url)
    await upgrade(eng)  # at head already (`database_url`): Alembic only checks, ~15 ms
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
async def stack(
    engine: AsyncEngine, database_url: str, tmp_path: Path, emulator_secrets: EmulatorSecrets
) -> AsyncIterator[Stack]:
    """Gateway + Google emulator over real HTTP (see tests/support/stack.py), on each backend."""
    async for running in start_stack(
        engine, database_url, tmp_path, emulator_secrets=emulator_secrets
    ):
        yield running
