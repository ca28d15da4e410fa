"""Helpers for tests of a disconnect (here and in the crash tests): a connected integration, its
data key row, the revoke calls Google saw, and the check that nothing of it is left."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from sqlalchemy import RowMapping, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.connections.model import (
    PURPOSE_ACCESS_TOKEN,
    PURPOSE_REFRESH_TOKEN,
)
from gateway.db.schema import integrations, vault_data_keys
from gateway.wiring import open_vault
from tests.support.stack import (
    Stack,
)
from vault.envelope import SealContext
from vault.errors import InvalidCiphertext


@dataclass(frozen=True)
class Connected:
    """An integration as the connect flow leaves it, with what must disappear on disconnect."""

    id: str
    tenant_id: str
    refresh_token: str = field(repr=False)
    access_token: str = field(repr=False)
    refresh_blob: bytes = field(repr=False)
    access_blob: bytes = field(repr=False)
    wrapped_key: bytes = field(repr=False)

    def secrets(self) -> list[bytes]:
        return [
            self.refresh_token.encode(),
            self.access_token.encode(),
            self.refresh_blob,
            self.access_blob,
            self.wrapped_key,
        ]


async def key_row(engine: AsyncEngine, integration_id: str) -> RowMapping | None:
    async with engine.connect() as conn:
        return (
            (
                await conn.execute(
                    select(vault_data_keys).where(
                        vault_data_keys.c.integration_id == integration_id
                    )
                )
            )
            .mappings()
            .first()
        )


def revoke_calls(stack: Stack, status: int | None = None) -> int:
    return len(stack.google.inspector.requests(endpoint="revoke", status=status))


async def assert_destroyed(stack: Stack, c: Connected) -> None:
    """What the policy promises, checked in the database itself."""
    row = await integration_row(stack.engine, c.id)
    assert row["status"] == "disconnected"
    assert row["disconnect_step"] == 6
    assert row["refresh_token"] is None and row["access_token"] is None
    assert row["google_email"] is None and row["google_sub"] is None, "personal data kept"
    assert row["disconnect_lease_owner"] is None
    assert await key_row(stack.engine, c.id) is None
    # A copy of the blobs (a backup) cannot be opened any more: the key is gone. A fresh vault
    # stands for any process after the disconnect (another replica's DEK cache may hold the
    # key until its TTL; the disconnect evicts only its own process's cache).
    vault = await open_vault(stack.settings, stack.engine)
    try:
        for purpose, blob in (
            (PURPOSE_REFRESH_TOKEN, c.refresh_blob),
            (PURPOSE_ACCESS_TOKEN, c.access_blob),
        ):
            with pytest.raises(InvalidCiphertext):
                await vault.open(SealContext(c.tenant_id, c.id, purpose), blob)
    finally:
        await vault.close()


async def integration_row(engine: AsyncEngine, integration_id: str) -> RowMapping:
    async with engine.connect() as conn:
        row = (
            (await conn.execute(select(integrations).where(integrations.c.id == integration_id)))
            .mappings()
            .one()
        )
    return row
