"""Fixtures for the vault's tests: a fresh key table on SQLite and PostgreSQL, a keyring, vaults.

The parametrised `database_url` fixture (one run per backend, PostgreSQL databases created as
`cgtest_<worker>_<pid>_<hex>` and dropped WITH (FORCE)) comes from tests/conftest.py via
tests/support/databases.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, event
from sqlalchemy.ext.asyncio import create_async_engine

from tests.vault.factories import VaultDb, VaultFactory
from vault.cache import DekCache
from vault.keyring import LocalKeyringProvider
from vault.service import Vault
from vault.store import SqlDekStore, data_keys_table


@pytest.fixture
async def vault_db(database_url: str) -> AsyncIterator[VaultDb]:
    """A fresh database holding just `vault_data_keys`, created with metadata.create_all."""
    engine = create_async_engine(database_url)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    metadata = MetaData()
    table = data_keys_table(metadata)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield VaultDb(engine, table, SqlDekStore(engine, table))
    finally:
        await engine.dispose()


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "keyring.json"


@pytest.fixture
async def provider(keyring_path: Path) -> LocalKeyringProvider:
    return await LocalKeyringProvider.open(keyring_path)


@pytest.fixture
def make_vault(provider: LocalKeyringProvider, vault_db: VaultDb) -> VaultFactory:
    """Build a Vault on the test database; every call is a separate instance with its own
    cache, as a second process would have."""

    def make(
        *,
        cache: DekCache | None = None,
        store: SqlDekStore | None = None,
        kek: Any = None,
        retire_grace_s: float = 0.0,
        clock: Callable[[], datetime] | None = None,
    ) -> Vault:
        extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
        return Vault(
            kek if kek is not None else provider,
            store if store is not None else vault_db.store,
            cache if cache is not None else DekCache(max_size=100, ttl_s=60),
            # Tests rotate and retire within milliseconds; the grace has its own test.
            retire_grace_s=retire_grace_s,
            **extra,
        )

    return make


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The same pragmas the gateway's engine sets, so concurrency tests see production locking.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
