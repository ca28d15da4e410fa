"""Fresh, empty databases for tests: an SQLite file, or a new PostgreSQL database."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.support.services import require_postgres

BACKENDS = ("sqlite", "postgres")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_name() -> str:
    """A PostgreSQL database name no other test can hold at the same time: the pytest-xdist
    worker (gw0, gw1, ...; "main" without xdist) and the process id keep parallel workers and
    concurrent runs on one server apart, the random part the tests within one process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"cgtest_{worker}_{os.getpid()}_{secrets.token_hex(6)}"


@asynccontextmanager
async def fresh_database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """Yield the SQLAlchemy URL of a new empty database; PostgreSQL ones are dropped after."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
        return
    admin_url = require_postgres()
    name = database_name()
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(admin_url, name).replace("postgresql://", "postgresql+asyncpg://", 1)
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
