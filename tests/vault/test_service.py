"""The Vault service on SQLite and PostgreSQL: sealing, opening, binding, destruction."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from tests.vault.factories import VaultDb, VaultFactory
from vault.cache import DekCache
from vault.envelope import SealContext
from vault.errors import InvalidCiphertext, KeyNotFound, VaultError
from vault.keyring import LocalKeyringProvider
from vault.service import Vault
from vault.store import DekRow, SqlDekStore

TOKEN = b"1//0gRefreshTokenExample-abcdefghijklmnopqrstuvwxyz"
CTX = SealContext("tenant-1", "integration-1", "refresh_token")


async def raw_rows(db: VaultDb, integration_id: str) -> list[tuple[Any, ...]]:
    """What is really in the table, bypassing the store."""
    async with db.engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT dek_id, tenant_id, kek_version, wrapped FROM vault_data_keys "
                "WHERE integration_id = :i"
            ),
            {"i": integration_id},
        )
        return [tuple(r) for r in result.all()]


async def sealed(vault: Vault, ctx: SealContext = CTX, payload: bytes = TOKEN) -> bytes:
    await vault.ensure_data_key(ctx.tenant_id, ctx.integration_id)
    return await vault.seal(ctx, payload)


async def test_seal_then_open_returns_the_token(make_vault: VaultFactory) -> None:
    vault = make_vault()
    blob = await sealed(vault)
    assert TOKEN not in blob
    assert await vault.open(CTX, blob) == TOKEN
    # A second instance (another worker, cold cache) opens it too.
    assert await make_vault(cache=DekCache(0)).open(CTX, blob) == TOKEN


async def test_ensure_data_key_is_idempotent(make_vault: VaultFactory, vault_db: VaultDb) -> None:
    vault = make_vault()
    first = await vault.ensure_data_key("tenant-1", "integration-1")
    second = await make_vault().ensure_data_key("tenant-1", "integration-1")
    assert first.dek_id == second.dek_id
    rows = await raw_rows(vault_db, "integration-1")
    assert len(rows) == 1
    assert rows[0][0] == first.dek_id
    assert bytes.fromhex(first.dek_id) not in bytes(rows[0][3])


async def test_concurrent_creation_ends_with_one_key(
    make_vault: VaultFactory, vault_db: VaultDb
) -> None:
    vaults = [make_vault() for _ in range(8)]
    infos = await asyncio.gather(*(v.ensure_data_key("tenant-1", "integration-1") for v in vaults))
    assert len({info.dek_id for info in infos}) == 1
    assert len(await raw_rows(vault_db, "integration-1")) == 1
    # Whichever instance sealed, every other one opens.
    blob = await vaults[3].seal(CTX, TOKEN)
    assert all([await v.open(CTX, blob) == TOKEN for v in vaults])


async def test_the_same_integration_under_another_tenant_is_refused(
    make_vault: VaultFactory,
) -> None:
    vault = make_vault()
    await vault.ensure_data_key("tenant-1", "integration-1")
    with pytest.raises(VaultError, match="another tenant"):
        await vault.ensure_data_key("tenant-2", "integration-1")


async def test_seal_without_a_key_is_refused(make_vault: VaultFactory) -> None:
    with pytest.raises(KeyNotFound):
        await make_vault().seal(CTX, TOKEN)


@pytest.mark.parametrize(
    "other",
    [
        SealContext("tenant-2", "integration-1", "refresh_token"),
        SealContext("tenant-1", "integration-1", "access_token"),
        SealContext("tenant-1", "integration-2", "refresh_token"),
    ],
    ids=["other-tenant", "other-purpose", "other-integration"],
)
async def test_blob_does_not_open_under_another_context(
    make_vault: VaultFactory, other: SealContext
) -> None:
    vault = make_vault()
    blob = await sealed(vault)
    await vault.ensure_data_key("tenant-1", "integration-2")
    for fresh in (vault, make_vault(cache=DekCache(0))):
        with pytest.raises(InvalidCiphertext):
            await fresh.open(other, blob)


async def test_blob_copied_to_another_integrations_row_does_not_open(
    make_vault: VaultFactory,
) -> None:
    vault = make_vault()
    ours = await sealed(vault, CTX)
    theirs_ctx = SealContext("tenant-1", "integration-2", "refresh_token")
    await sealed(vault, theirs_ctx)
    # The other row's owner stores our blob as theirs: wrong DEK id, wrong AAD.
    with pytest.raises(InvalidCiphertext) as info:
        await vault.open(theirs_ctx, ours)
    assert info.value.reason == "other_key"


async def test_wrapped_key_copied_onto_another_row_does_not_unwrap(
    make_vault: VaultFactory, vault_db: VaultDb
) -> None:
    vault = make_vault(cache=DekCache(0))
    await sealed(vault, CTX)
    other_ctx = SealContext("tenant-1", "integration-2", "refresh_token")
    other_blob = await sealed(vault, other_ctx)
    async with vault_db.engine.begin() as conn:
        # Move integration-1's wrapped DEK into integration-2's row.
        await conn.execute(
            text(
                "UPDATE vault_data_keys SET wrapped = "
                "(SELECT wrapped FROM vault_data_keys WHERE integration_id = 'integration-1') "
                "WHERE integration_id = 'integration-2'"
            )
        )
    with pytest.raises(InvalidCiphertext):
        await vault.open(other_ctx, other_blob)
    with pytest.raises(InvalidCiphertext):
        await vault.seal(other_ctx, TOKEN)


async def test_a_tampered_key_row_does_not_open(
    make_vault: VaultFactory, vault_db: VaultDb
) -> None:
    vault = make_vault(cache=DekCache(0))
    blob = await sealed(vault)
    (dek_id, _tenant, _version, wrapped) = (await raw_rows(vault_db, "integration-1"))[0]
    flipped = bytearray(wrapped)
    flipped[20] ^= 0x01
    async with vault_db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE vault_data_keys SET wrapped = :w WHERE dek_id = :d"),
            {"w": bytes(flipped), "d": dek_id},
        )
    with pytest.raises(InvalidCiphertext):
        await vault.open(CTX, blob)


# -- destruction ------------------------------------------------------------------------------


async def test_destroy_deletes_the_row_and_the_blob_no_longer_opens(
    provider: LocalKeyringProvider, vault_db: VaultDb
) -> None:
    fixed_now = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
    vault = Vault(
        provider,
        vault_db.store,
        DekCache(100, 60),
        clock=lambda: fixed_now,
    )
    blob = await sealed(vault)
    assert await vault.open(CTX, blob) == TOKEN  # cache now warm
    info = await vault.ensure_data_key("tenant-1", "integration-1")

    receipt = await vault.destroy("tenant-1", "integration-1")

    assert (receipt.integration_id, receipt.dek_id, receipt.destroyed) == (
        "integration-1",
        info.dek_id,
        True,
    )
    assert receipt.destroyed_at == fixed_now
    assert await raw_rows(vault_db, "integration-1") == []
    with pytest.raises(InvalidCiphertext) as err:
        await vault.open(CTX, blob)  # the warm cache was evicted too
    assert err.value.reason == "no_key"
    with pytest.raises(KeyNotFound):
        await vault.seal(CTX, TOKEN)


async def test_destroy_is_idempotent_and_leaves_other_integrations_alone(
    make_vault: VaultFactory, vault_db: VaultDb
) -> None:
    vault = make_vault()
    keep_ctx = SealContext("tenant-1", "integration-2", "refresh_token")
    keep = await sealed(vault, keep_ctx)
    await sealed(vault)
    await vault.destroy("tenant-1", "integration-1")
    again = await vault.destroy("tenant-1", "integration-1")
    assert (again.destroyed, again.dek_id) == (False, None)
    assert await vault.open(keep_ctx, keep) == TOKEN
    assert len(await raw_rows(vault_db, "integration-2")) == 1


async def test_destroy_with_the_wrong_tenant_destroys_nothing(
    make_vault: VaultFactory, vault_db: VaultDb
) -> None:
    vault = make_vault()
    blob = await sealed(vault)
    receipt = await vault.destroy("tenant-2", "integration-1")
    assert not receipt.destroyed
    assert await vault.open(CTX, blob) == TOKEN


async def test_reconnecting_after_destroy_gets_a_new_key_that_cannot_open_old_blobs(
    make_vault: VaultFactory,
) -> None:
    vault = make_vault()
    old_blob = await sealed(vault)
    old = await vault.ensure_data_key("tenant-1", "integration-1")
    await vault.destroy("tenant-1", "integration-1")
    new = await vault.ensure_data_key("tenant-1", "integration-1")
    assert new.dek_id != old.dek_id
    with pytest.raises(InvalidCiphertext):
        await vault.open(CTX, old_blob)


async def test_other_processes_stop_opening_within_the_cache_ttl(
    make_vault: VaultFactory,
) -> None:
    now = [0.0]
    worker = make_vault(cache=DekCache(100, 300, clock=lambda: now[0]))
    admin = make_vault()
    blob = await sealed(worker)
    assert await worker.open(CTX, blob) == TOKEN
    await admin.destroy("tenant-1", "integration-1")
    # Documented limit: the worker's cached DEK outlives the row until its TTL runs out.
    assert await worker.open(CTX, blob) == TOKEN
    now[0] = 300.0
    with pytest.raises(InvalidCiphertext):
        await worker.open(CTX, blob)


async def test_receipt_and_reprs_hold_no_secret(make_vault: VaultFactory) -> None:
    vault = make_vault()
    blob = await sealed(vault)
    receipt = await vault.destroy("tenant-1", "integration-1")
    shown = repr(receipt) + repr(vault)
    assert TOKEN.decode() not in shown
    assert blob.hex() not in shown


async def test_status_counts_keys_per_kek_version(
    make_vault: VaultFactory, provider: LocalKeyringProvider
) -> None:
    vault = make_vault()
    for i in range(3):
        await vault.ensure_data_key("tenant-1", f"integration-{i}")
    await vault.rotate()
    await vault.ensure_data_key("tenant-1", "integration-new")
    status = await vault.status()
    assert dict(status.dek_counts) == {1: 3, 2: 1}
    assert status.primary_version == 2
    assert [(v.version, v.state) for v in status.versions] == [(1, "active"), (2, "primary")]
    assert status.kek_id == provider.kek_id


async def test_store_insert_race_returns_the_winner(
    vault_db: VaultDb, make_vault: VaultFactory
) -> None:
    winner = await make_vault().ensure_data_key("tenant-1", "integration-1")
    store: SqlDekStore = vault_db.store
    existing = await store.get("integration-1")
    assert existing is not None
    loser = await store.insert(
        DekRow(
            dek_id="f" * 32,
            tenant_id="tenant-1",
            integration_id="integration-1",
            kek_id=existing.kek_id,
            kek_version=existing.kek_version,
            wrapped=b"\x00" * 61,
            created_at=datetime.now(UTC),
        )
    )
    assert loser.dek_id == winner.dek_id
    assert len(await raw_rows(vault_db, "integration-1")) == 1


async def test_key_info_is_read_only_tenant_scoped_and_gone_after_destroy(
    make_vault: VaultFactory,
) -> None:
    vault = make_vault()
    assert await vault.key_info("acme", "int-info") is None
    assert await vault.key_info("acme", "int-info") is None, "looking must not create a key"
    created = await vault.ensure_data_key("acme", "int-info")
    info = await vault.key_info("acme", "int-info")
    assert info is not None
    assert (info.dek_id, info.kek_version, info.rewrapped_at) == (created.dek_id, 1, None)
    assert await vault.key_info("globex", "int-info") is None
    await vault.destroy("acme", "int-info")
    assert await vault.key_info("acme", "int-info") is None
