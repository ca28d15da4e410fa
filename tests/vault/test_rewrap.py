"""KEK rotation, rewrapping and retirement on SQLite and PostgreSQL, including crashes and
concurrent traffic."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.vault.factories import VaultDb, VaultFactory
from vault.cache import DekCache
from vault.envelope import SealContext
from vault.errors import InvalidCiphertext, RetireRefused
from vault.kek import KekProvider, KekVersion, WrappedKey
from vault.keyring import LocalKeyringProvider
from vault.service import RewrapResult, Vault
from vault.store import DekRow, KeyRef, Rewrapped, SqlDekStore


class PowerCut(Exception):
    """Stands in for the process dying."""


def ctx(i: int, purpose: str = "refresh_token") -> SealContext:
    return SealContext("tenant-1", f"integration-{i:04d}", purpose)


def token(i: int) -> bytes:
    return f"1//0refresh-{i}".encode()


async def populate(vault: Vault, n: int) -> dict[int, bytes]:
    blobs = {}
    for i in range(n):
        await vault.ensure_data_key("tenant-1", ctx(i).integration_id)
        blobs[i] = await vault.seal(ctx(i), token(i))
    return blobs


async def assert_all_open(vault: Vault, blobs: dict[int, bytes]) -> None:
    for i, blob in blobs.items():
        assert await vault.open(ctx(i), blob) == token(i)


async def key_rows(db: VaultDb) -> dict[str, tuple[int, bytes]]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT integration_id, kek_version, wrapped FROM vault_data_keys")
        )
        return {r[0]: (r[1], bytes(r[2])) for r in rows.all()}


async def test_rotation_keeps_old_blobs_open_and_wraps_new_keys_under_the_primary(
    make_vault: VaultFactory,
) -> None:
    vault = make_vault(cache=DekCache(0))
    blobs = await populate(vault, 3)
    assert await vault.rotate() == 2
    await assert_all_open(vault, blobs)
    info = await vault.ensure_data_key("tenant-1", "integration-new")
    assert info.kek_version == 2
    assert dict((await vault.status()).dek_counts) == {1: 3, 2: 1}


async def test_rewrap_moves_every_key_to_the_primary_without_touching_tokens(
    make_vault: VaultFactory, vault_db: VaultDb
) -> None:
    vault = make_vault(cache=DekCache(0))
    blobs = await populate(vault, 25)
    before = await key_rows(vault_db)
    await vault.rotate()
    progress: list[tuple[int, int]] = []

    result = await vault.rewrap(batch_size=10, progress=lambda d, t: progress.append((d, t)))

    assert (result.rewrapped, result.skipped, result.total_remaining) == (25, 0, 0)
    assert progress == [(10, 25), (20, 25), (25, 25)]
    after = await key_rows(vault_db)
    assert {version for version, _ in after.values()} == {2}
    assert all(after[i][1] != before[i][1] for i in before)  # really re-wrapped
    await assert_all_open(vault, blobs)  # same blobs, same DEKs
    again = await vault.rewrap()
    assert (again.rewrapped, again.total_remaining) == (0, 0)


async def test_retire_is_refused_while_keys_depend_then_allowed_after_rewrap(
    make_vault: VaultFactory, vault_db: VaultDb, keyring_path: Path
) -> None:
    vault = make_vault(cache=DekCache(0))
    blobs = await populate(vault, 5)
    old_rows = await key_rows(vault_db)
    await vault.rotate()
    with pytest.raises(RetireRefused, match="still wraps 5 data key"):
        await vault.retire(1)
    with pytest.raises(RetireRefused, match="primary"):
        await vault.retire(2)

    await vault.rewrap()
    await vault.retire(1)

    states = {v.version: v.state for v in (await vault.status()).versions}
    assert states == {1: "retired", 2: "primary"}
    await assert_all_open(make_vault(cache=DekCache(0)), blobs)
    # A wrapped DEK saved from before the rewrap no longer unwraps under the retired version.
    reopened = await LocalKeyringProvider.open(keyring_path)
    row = await vault_db.store.get(ctx(0).integration_id)
    assert row is not None
    with pytest.raises(InvalidCiphertext):
        await reopened.unwrap(
            WrappedKey(reopened.kek_id, 1, old_rows[ctx(0).integration_id][1]),
            _binding(row),
        )


def _binding(row: DekRow | KeyRef) -> bytes:
    from vault.envelope import dek_binding

    return dek_binding(row.tenant_id, row.integration_id, bytes.fromhex(row.dek_id))


async def _restore(db: VaultDb, row: DekRow) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(
            db.table.insert(),
            {
                "dek_id": row.dek_id,
                "tenant_id": row.tenant_id,
                "integration_id": row.integration_id,
                "kek_id": row.kek_id,
                "kek_version": row.kek_version,
                "wrapped": row.wrapped,
                "created_at": row.created_at,
            },
        )


async def test_backup_caveat_restored_row_reopens_until_its_kek_version_is_retired(
    make_vault: VaultFactory, vault_db: VaultDb
) -> None:
    vault = make_vault(cache=DekCache(0))
    blob = (await populate(vault, 2))[0]
    backup_row = await vault_db.store.get(ctx(0).integration_id)
    assert backup_row is not None

    await vault.destroy("tenant-1", ctx(0).integration_id)
    with pytest.raises(InvalidCiphertext):
        await vault.open(ctx(0), blob)

    # The caveat: restoring the key row from a backup brings the blob back...
    await _restore(vault_db, backup_row)
    assert await vault.open(ctx(0), blob) == token(0)
    await vault.destroy("tenant-1", ctx(0).integration_id)

    # ...until the KEK version that wrapped it is retired (rotate, rewrap the live keys, retire).
    await vault.rotate()
    await vault.rewrap()
    await vault.retire(1)
    await _restore(vault_db, backup_row)
    with pytest.raises(InvalidCiphertext):
        await vault.open(ctx(0), blob)


# -- crashes ----------------------------------------------------------------------------------


class StoreThatDiesMidBatch(SqlDekStore):
    """Writes `good_batches` batches, then dies with the next batch's UPDATE executed but not
    committed, as if the process were killed inside the transaction."""

    def __init__(self, engine: object, table: object, good_batches: int) -> None:
        super().__init__(engine, table)  # type: ignore[arg-type]
        self.good_batches = good_batches

    async def update_wrapped(self, updates: Sequence[Rewrapped], now: datetime) -> int:
        if self.good_batches == 0:
            async with self._engine.begin() as conn:
                await conn.execute(
                    self._update,
                    [
                        {
                            "b_dek_id": u.dek_id,
                            "b_old_version": u.old_kek_version,
                            "b_kek_id": u.kek_id,
                            "b_kek_version": u.kek_version,
                            "b_wrapped": u.wrapped,
                            "b_now": now,
                        }
                        for u in updates
                    ],
                )
                raise PowerCut
        self.good_batches -= 1
        return await super().update_wrapped(updates, now)


class ProviderThatDiesAfter:
    """A KEK provider wrapper that dies after `wraps` wraps (mid-batch, before any write)."""

    def __init__(self, inner: KekProvider, wraps: int) -> None:
        self._inner = inner
        self.wraps_left = wraps

    @property
    def kek_id(self) -> str:
        return self._inner.kek_id

    async def primary_version(self) -> int:
        return await self._inner.primary_version()

    async def versions(self) -> list[KekVersion]:
        return await self._inner.versions()

    async def wrap(self, dek: bytes, aad: bytes) -> WrappedKey:
        if self.wraps_left == 0:
            raise PowerCut
        self.wraps_left -= 1
        return await self._inner.wrap(dek, aad)

    async def unwrap(self, wrapped: WrappedKey, aad: bytes) -> bytes:
        return await self._inner.unwrap(wrapped, aad)

    async def rotate(self) -> int:
        return await self._inner.rotate()

    async def retire(self, version: int) -> None:
        await self._inner.retire(version)

    async def close(self) -> None:
        await self._inner.close()


async def fresh_vault(db: VaultDb, keyring_path: Path) -> Vault:
    """A genuinely new vault, as after a restart: keyring re-read, new store and cache."""
    provider = await LocalKeyringProvider.open(keyring_path, create=False)
    return Vault(provider, SqlDekStore(db.engine, db.table), DekCache(100, 60), retire_grace_s=0)


async def test_rewrap_interrupted_inside_a_batch_write_resumes_in_a_new_process(
    make_vault: VaultFactory, vault_db: VaultDb, keyring_path: Path, provider: LocalKeyringProvider
) -> None:
    vault = make_vault(cache=DekCache(0))
    blobs = await populate(vault, 35)
    await vault.rotate()
    dying = Vault(provider, StoreThatDiesMidBatch(vault_db.engine, vault_db.table, 2))

    with pytest.raises(PowerCut):
        await dying.rewrap(batch_size=10)

    # Two batches committed, the third rolled back whole.
    assert dict((await vault.status()).dek_counts) == {1: 15, 2: 20}
    await assert_all_open(make_vault(cache=DekCache(0)), blobs)

    restarted = await fresh_vault(vault_db, keyring_path)
    result = await restarted.rewrap(batch_size=10)
    assert (result.rewrapped, result.skipped, result.total_remaining) == (15, 0, 0)
    assert dict((await restarted.status()).dek_counts) == {2: 35}
    await assert_all_open(restarted, blobs)


async def test_rewrap_interrupted_between_wraps_resumes_in_a_new_process(
    make_vault: VaultFactory, vault_db: VaultDb, keyring_path: Path, provider: LocalKeyringProvider
) -> None:
    vault = make_vault(cache=DekCache(0))
    blobs = await populate(vault, 12)
    await vault.rotate()
    dying = Vault(ProviderThatDiesAfter(provider, wraps=7), vault_db.store)

    with pytest.raises(PowerCut):
        await dying.rewrap(batch_size=5)

    assert dict((await vault.status()).dek_counts) == {1: 7, 2: 5}
    restarted = await fresh_vault(vault_db, keyring_path)
    result = await restarted.rewrap(batch_size=5)
    assert (result.rewrapped, result.total_remaining) == (7, 0)
    await restarted.retire(1)
    await assert_all_open(restarted, blobs)


# -- concurrency ------------------------------------------------------------------------------


class StoreWithInterference(SqlDekStore):
    """After the first batch is read, another process destroys one of its rows and re-wraps
    another: the optimistic guard must leave both alone."""

    def __init__(self, engine: object, table: object, meddle: object) -> None:
        super().__init__(engine, table)  # type: ignore[arg-type]
        self.meddle = meddle
        self.done = False

    async def batch_not_at(
        self, kek_version: int, *, after_dek_id: str | None, limit: int
    ) -> list[KeyRef]:
        rows = await super().batch_not_at(kek_version, after_dek_id=after_dek_id, limit=limit)
        if rows and not self.done:
            self.done = True
            await self.meddle(rows)  # type: ignore[operator]
        return rows


async def test_rows_changed_during_rewrap_are_skipped_not_clobbered(
    make_vault: VaultFactory, vault_db: VaultDb, provider: LocalKeyringProvider
) -> None:
    other = make_vault(cache=DekCache(0))
    blobs = await populate(other, 10)
    await other.rotate()
    rewrapped_elsewhere: dict[str, bytes] = {}
    destroyed: list[str] = []

    async def meddle(rows: list[KeyRef]) -> None:
        destroyed.append(rows[0].integration_id)
        await other.destroy(rows[0].tenant_id, rows[0].integration_id)
        new = await provider.wrap(
            await provider.unwrap(_wrapped(rows[1]), _binding(rows[1])), _binding(rows[1])
        )
        rewrapped_elsewhere[rows[1].integration_id] = new.wrapped
        await vault_db.store.update_wrapped(
            [Rewrapped(rows[1].dek_id, 1, new.kek_id, new.kek_version, new.wrapped)],
            datetime.now().astimezone(),
        )

    vault = Vault(provider, StoreWithInterference(vault_db.engine, vault_db.table, meddle))
    result = await vault.rewrap(batch_size=100)

    assert (result.rewrapped, result.skipped, result.total_remaining) == (8, 2, 0)
    rows = await key_rows(vault_db)
    assert len(rows) == 9  # the destroyed key stayed destroyed
    [(name, wrapped)] = rewrapped_elsewhere.items()
    assert rows[name] == (2, wrapped)  # the concurrent writer's value survived
    survivors = {i: b for i, b in blobs.items() if ctx(i).integration_id not in destroyed}
    assert len(survivors) == 9
    await assert_all_open(make_vault(cache=DekCache(0)), survivors)


def _wrapped(row: DekRow | KeyRef) -> WrappedKey:
    return WrappedKey(row.kek_id, row.kek_version, row.wrapped)


class Turns:
    """Two sides (the rewrap and the traffic) taking turns: `pass_turn` hands the turn to the
    other side and waits until it is handed back (or the other side has finished), so the two
    interleave in a fixed order whatever the load on the machine."""

    def __init__(self, first: str) -> None:
        self._holder = first
        self._finished: set[str] = set()
        self._changed = asyncio.Condition()

    async def wait_turn(self, side: str) -> None:
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._holder == side or self._other(side) in self._finished
            )

    async def pass_turn(self, side: str) -> None:
        async with self._changed:
            self._holder = self._other(side)
            self._changed.notify_all()
        await self.wait_turn(side)

    async def finish(self, side: str) -> None:
        async with self._changed:
            self._finished.add(side)
            self._holder = self._other(side)
            self._changed.notify_all()

    @staticmethod
    def _other(side: str) -> str:
        return "traffic" if side == "rewrap" else "rewrap"


class StoreThatTakesTurns(SqlDekStore):
    """After each rewrap batch is committed, the traffic gets the turn before the rewrap goes
    on: the hook that makes 'traffic ran between batches' a certainty rather than luck."""

    def __init__(self, engine: object, table: object, turns: Turns) -> None:
        super().__init__(engine, table)  # type: ignore[arg-type]
        self.turns = turns

    async def update_wrapped(self, updates: Sequence[Rewrapped], now: datetime) -> int:
        written = await super().update_wrapped(updates, now)
        await self.turns.pass_turn("rewrap")
        return written


async def test_sealing_and_opening_keep_working_during_a_rewrap(
    make_vault: VaultFactory, vault_db: VaultDb
) -> None:
    setup = make_vault(cache=DekCache(0))
    blobs = await populate(setup, 60)
    await setup.rotate()
    turns = Turns(first="rewrap")
    rewrapper = make_vault(
        cache=DekCache(0), store=StoreThatTakesTurns(vault_db.engine, vault_db.table, turns)
    )
    server = make_vault(cache=DekCache(0))  # cold: every open reads the row mid-rewrap
    opened = 0
    sealed_during: dict[int, bytes] = {}

    async def traffic() -> None:
        nonlocal opened
        await turns.wait_turn("traffic")
        try:
            for round_ in range(3):
                for i, blob in list(blobs.items()):
                    assert await server.open(ctx(i), blob) == token(i)
                    opened += 1
                    if i % 10 == round_:
                        sealed_during[i] = await server.seal(ctx(i), token(i))
                    if opened % 20 == 0:
                        await turns.pass_turn("traffic")
        finally:
            await turns.finish("traffic")

    async def rewrap() -> RewrapResult:
        try:
            return await rewrapper.rewrap(
                batch_size=7, progress=lambda d, t: opened_at_batch.append(opened)
            )
        finally:
            await turns.finish("rewrap")

    opened_at_batch: list[int] = []
    result, _ = await asyncio.gather(rewrap(), traffic())

    assert opened == 180
    # The two interleaved: 20 opens (and some seals) after each of the 9 committed batches,
    # while later batches were still under the old KEK version.
    assert opened_at_batch == list(range(20, 181, 20))
    assert result.total_remaining == 0
    assert result.rewrapped + result.skipped == 60
    assert dict((await server.status()).dek_counts) == {2: 60}
    await assert_all_open(server, blobs)
    await assert_all_open(server, sealed_during)


async def test_an_unreadable_key_is_reported_and_keeps_its_version_from_retirement(
    make_vault: VaultFactory, vault_db: VaultDb
) -> None:
    vault = make_vault(cache=DekCache(0))
    await populate(vault, 4)
    async with vault_db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE vault_data_keys SET wrapped = :w WHERE integration_id = :i"),
            {"w": b"\x01" + bytes(60), "i": ctx(2).integration_id},
        )
    await vault.rotate()
    result = await vault.rewrap()
    assert (result.rewrapped, result.unreadable, result.total_remaining) == (3, 1, 1)
    with pytest.raises(RetireRefused, match="1 data key"):
        await vault.retire(1)


async def test_large_batches_are_counted_exactly(
    make_vault: VaultFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The read-back that counts written rows goes in slices (SQLite's bound-parameter cap);
    # tiny slices here stand in for a batch of more than 32,766 keys.
    import vault.store

    monkeypatch.setattr(vault.store, "_READBACK_CHUNK", 3)
    vault_ = make_vault(cache=DekCache(0))
    blobs = await populate(vault_, 10)
    await vault_.rotate()
    result = await vault_.rewrap(batch_size=10)
    assert (result.rewrapped, result.skipped, result.total_remaining) == (10, 0, 0)
    await assert_all_open(vault_, blobs)


async def test_retire_waits_out_the_grace_after_a_rotation(make_vault: VaultFactory) -> None:
    """Other processes may wrap new keys under the old primary until they re-read the
    provider; retiring it before they have would strand those keys."""
    now = [datetime.now(UTC)]
    vault = make_vault(retire_grace_s=60, clock=lambda: now[0])
    await vault.rotate()
    with pytest.raises(RetireRefused, match="superseded 0 s ago"):
        await vault.retire(1)
    now[0] += timedelta(seconds=61)
    await vault.retire(1)
    assert [(v.version, v.state) for v in (await vault.status()).versions] == [
        (1, "retired"),
        (2, "primary"),
    ]
