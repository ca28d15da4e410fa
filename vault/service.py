"""The vault's service layer: per-integration data keys, sealing, destruction, KEK rotation.

Each integration has one data key (DEK), stored only wrapped by the KEK provider and bound to
(tenant_id, integration_id, dek_id). Tokens are sealed with the DEK (`vault.envelope`);
destroying the DEK row crypto-shreds every blob sealed under it, including copies in backups
of the token table.

Backup caveat: a backup that also holds the `vault_data_keys` row can reopen those blobs for
as long as the KEK version that wrapped the row exists. Rotate and rewrap, then retire the old
KEK version, to make restored rows useless too.

Rotation: `rotate()` makes a new KEK version primary (existing DEKs keep working);
`rewrap()` re-wraps every DEK under the primary, batch by batch, never touching token
ciphertexts; once `status()` shows no DEK under a version, `retire(version)` removes it.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault import envelope
from vault.cache import CachedDek, DekCache
from vault.envelope import SealContext
from vault.errors import InvalidCiphertext, KeyNotFound, RetireRefused, VaultError
from vault.kek import KekProvider, KekVersion, WrappedKey
from vault.store import DekRow, KeyRef, Rewrapped, SqlDekStore

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""`progress(done, total)` after each rewrap batch."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DataKeyInfo:
    """Public facts about an integration's data key."""

    integration_id: str
    dek_id: str
    kek_id: str
    kek_version: int
    created_at: datetime
    rewrapped_at: datetime | None = None

    @classmethod
    def of(cls, row: DekRow) -> DataKeyInfo:
        return cls(
            integration_id=row.integration_id,
            dek_id=row.dek_id,
            kek_id=row.kek_id,
            kek_version=row.kek_version,
            created_at=row.created_at,
            rewrapped_at=row.rewrapped_at,
        )


@dataclass(frozen=True)
class DestructionReceipt:
    """Proof of a destroy call. `destroyed` is False when there was no key (already gone)."""

    integration_id: str
    dek_id: str | None
    destroyed: bool
    destroyed_at: datetime


@dataclass(frozen=True)
class RewrapResult:
    """Outcome of one `rewrap()` run.

    `skipped`: rows changed by someone else between read and write (destroyed, or rewrapped
    by a concurrent run); `unreadable`: rows whose wrapped DEK would not unwrap (logged by
    dek_id); `total_remaining`: DEKs still not under the primary when the run ended.
    """

    rewrapped: int
    skipped: int
    total_remaining: int
    unreadable: int = 0


@dataclass(frozen=True)
class VaultStatus:
    """DEK counts per KEK version, and the provider's versions."""

    kek_id: str
    primary_version: int
    versions: list[KekVersion]
    dek_counts: Mapping[int, int] = field(default_factory=dict)


@dataclass
class _RewrapTally:
    total: int
    progress: ProgressCallback | None
    done: int = 0
    rewrapped: int = 0
    skipped: int = 0
    unreadable: int = 0

    def batch_written(self, written: int, rows: int, attempted: int) -> None:
        self.rewrapped += written
        self.skipped += attempted - written
        self.done += rows
        if self.progress is not None:
            self.progress(self.done, self.total)


class Vault:
    """Seals and opens tokens with per-integration data keys.

    `clock` gives wall-clock UTC time for timestamps (receipts, created_at); `rng` gives
    random bytes for DEKs, ids and nonces. The cache has its own monotonic clock.
    """

    def __init__(
        self,
        provider: KekProvider,
        store: SqlDekStore,
        cache: DekCache | None = None,
        *,
        rng: envelope.Rng = os.urandom,
        clock: Callable[[], datetime] = _utc_now,
        retire_grace_s: float = 60.0,
    ) -> None:
        self._provider = provider
        self._retire_grace_s = retire_grace_s
        self._store = store
        self._cache = cache if cache is not None else DekCache(max_size=0)
        self._rng = rng
        self._clock = clock
        # Operation counts for metrics (`operations["seal"]`, ...): a dict increment costs far
        # less than a metrics library call on the hot seal/open path; exporters read it.
        self.operations: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"Vault(kek_id={self._provider.kek_id!r}, cache={self._cache!r})"

    @property
    def provider(self) -> KekProvider:
        """The KEK provider (the trust keys file wraps its secrets with it too)."""
        return self._provider

    async def close(self) -> None:
        """Forget every cached DEK and close the KEK provider (HSM session, KMS client)."""
        self._cache.clear()
        await self._provider.close()

    # -- data keys ---------------------------------------------------------------------------

    async def key_info(self, tenant_id: str, integration_id: str) -> DataKeyInfo | None:
        """Facts about the integration's data key (never key bytes), or None when it has none
        (never created, or destroyed). Read-only: unlike `ensure_data_key`, never creates one."""
        row = await self._store.get(integration_id)
        if row is None or row.tenant_id != tenant_id:
            return None
        return DataKeyInfo.of(row)

    async def ensure_data_key(self, tenant_id: str, integration_id: str) -> DataKeyInfo:
        """Create the integration's data key unless it exists; safe to call concurrently."""
        row = await self._store.get(integration_id)
        if row is None:
            created_at = self._clock()
            dek = envelope.new_dek(self._rng)
            dek_id = envelope.new_dek_id(self._rng, now_ms=int(created_at.timestamp() * 1000))
            wrapped = await self._provider.wrap(
                dek, envelope.dek_binding(tenant_id, integration_id, dek_id)
            )
            ticket = self._cache.ticket()
            row = await self._store.insert(
                DekRow(
                    dek_id=dek_id.hex(),
                    tenant_id=tenant_id,
                    integration_id=integration_id,
                    kek_id=wrapped.kek_id,
                    kek_version=wrapped.kek_version,
                    wrapped=wrapped.wrapped,
                    created_at=created_at,
                )
            )
            if row.dek_id == dek_id.hex():  # ours won: the first seal (OAuth callback) is warm
                self._cache.put(integration_id, CachedDek(dek_id, tenant_id, AESGCM(dek)), ticket)
        if row.tenant_id != tenant_id:
            # integration ids are global; another tenant's id here is a caller bug.
            raise VaultError(f"integration {integration_id!r} belongs to another tenant")
        return DataKeyInfo.of(row)

    async def _load_dek(self, tenant_id: str, integration_id: str) -> CachedDek | None:
        """Read and unwrap the integration's DEK (after a cache miss), caching it."""
        ticket = self._cache.ticket()
        row = await self._store.get(integration_id)
        if row is None or row.tenant_id != tenant_id:
            # Another tenant's integration is, for this caller, an integration with no key.
            return None
        try:
            dek_id = bytes.fromhex(row.dek_id)
            aad = envelope.dek_binding(row.tenant_id, row.integration_id, dek_id)
        except ValueError:
            raise InvalidCiphertext("bad_key_row") from None
        dek = await self._provider.unwrap(
            WrappedKey(kek_id=row.kek_id, kek_version=row.kek_version, wrapped=row.wrapped), aad
        )
        loaded = CachedDek(dek_id=dek_id, tenant_id=row.tenant_id, aead=AESGCM(dek))
        self._cache.put(integration_id, loaded, ticket)
        return loaded

    async def seal(self, ctx: SealContext, plaintext: bytes) -> bytes:
        """Encrypt `plaintext` for `ctx`.

        Raises KeyNotFound if the tenant's integration has no data key (call ensure_data_key
        first): a destroyed integration must not quietly get a new key and new tokens.
        InvalidCiphertext if its key row does not unwrap (tampered, KEK version retired).
        """
        dek = self._cache.get(ctx.integration_id) or await self._load_dek(
            ctx.tenant_id, ctx.integration_id
        )
        if dek is None:
            raise KeyNotFound(f"no data key for integration {ctx.integration_id!r}")
        if dek.tenant_id != ctx.tenant_id:  # a cached DEK of the same id, another tenant
            raise KeyNotFound(f"no data key for integration {ctx.integration_id!r}")
        self.operations["seal"] += 1
        return envelope.seal(dek.aead, dek.dek_id, ctx, plaintext, self._rng)

    async def open(self, ctx: SealContext, blob: bytes) -> bytes:
        """Decrypt a blob sealed for `ctx`.

        Raises InvalidCiphertext on every failure: tampered or truncated blob, wrong context,
        destroyed or missing key, a blob from another integration. A KEK provider outage
        raises KekProviderError instead, because retrying later may succeed.
        """
        # The cache is read here rather than in _load_dek to spare a coroutine per warm open.
        dek = self._cache.get(ctx.integration_id) or await self._load_dek(
            ctx.tenant_id, ctx.integration_id
        )
        self.operations["open"] += 1
        if dek is None:
            self.operations["open_failed"] += 1
            raise InvalidCiphertext("no_key")
        if dek.tenant_id != ctx.tenant_id:
            self.operations["open_failed"] += 1
            raise InvalidCiphertext("other_tenant")
        try:
            return envelope.open_sealed(dek.aead, ctx, blob, dek.dek_id)
        except InvalidCiphertext:
            self.operations["open_failed"] += 1
            raise

    async def destroy(self, tenant_id: str, integration_id: str) -> DestructionReceipt:
        """Crypto-shred the integration: hard-delete its key row and forget any cached copy.

        Idempotent: a second call returns a receipt with destroyed=False.
        """
        self._cache.evict(integration_id)
        self.operations["destroy"] += 1
        dek_id = await self._store.delete(tenant_id, integration_id)
        # Evict again: an open that read the row before the delete may have cached it since.
        self._cache.evict(integration_id)
        receipt = DestructionReceipt(
            integration_id=integration_id,
            dek_id=dek_id,
            destroyed=dek_id is not None,
            destroyed_at=self._clock(),
        )
        log.info(
            "vault destroy integration=%s dek_id=%s destroyed=%s",
            integration_id,
            dek_id,
            receipt.destroyed,
        )
        return receipt

    # -- KEK rotation ------------------------------------------------------------------------

    async def rotate(self) -> int:
        """Make a new KEK version primary; return it. Existing DEKs keep working."""
        version = await self._provider.rotate()
        log.info("vault KEK rotated kek_id=%s primary=%d", self._provider.kek_id, version)
        return version

    async def rewrap(
        self, batch_size: int = 1000, progress: ProgressCallback | None = None
    ) -> RewrapResult:
        """Re-wrap every DEK not under the primary KEK version.

        Each batch is written in its own transaction with an optimistic guard, so the run can
        be interrupted at any point (later batches wait for the next run) and the vault keeps
        sealing and opening meanwhile. Token ciphertexts are never touched.

        While one batch is being written, the next is read and re-wrapped: the database
        works in its own thread (or server) while the event loop does the AES, which is what
        lets the local keyring reach 20,000 DEKs/s on SQLite. At most one write is in flight,
        so an interruption loses at most that batch's uncommitted transaction.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        primary = await self._provider.primary_version()
        total = await self._store.count_not_at(primary)
        tally = _RewrapTally(total, progress)
        after: str | None = None
        writing: asyncio.Task[int] | None = None
        writing_sizes = (0, 0)
        try:
            while True:
                rows = await self._store.batch_not_at(primary, after_dek_id=after, limit=batch_size)
                if not rows:
                    break
                after = rows[-1].dek_id
                updates = await self._rewrap_batch(rows, tally)
                if writing is not None:
                    tally.batch_written(await writing, *writing_sizes)
                writing = asyncio.create_task(self._store.update_wrapped(updates, self._clock()))
                writing_sizes = (len(rows), len(updates))
            if writing is not None:
                pending, writing = writing, None
                tally.batch_written(await pending, *writing_sizes)
        finally:
            if writing is not None:
                # Interrupted with a write in flight: let it finish (or fail) on its own terms
                # rather than cancel it halfway through its transaction.
                await asyncio.gather(writing, return_exceptions=True)
        remaining = await self._store.count_not_at(await self._provider.primary_version())
        log.info(
            "vault rewrap done rewrapped=%d skipped=%d unreadable=%d remaining=%d",
            tally.rewrapped,
            tally.skipped,
            tally.unreadable,
            remaining,
        )
        self.operations["rewrap"] += tally.rewrapped
        return RewrapResult(tally.rewrapped, tally.skipped, remaining, tally.unreadable)

    async def _rewrap_batch(self, rows: list[KeyRef], tally: _RewrapTally) -> list[Rewrapped]:
        updates: list[Rewrapped] = []
        for row in rows:
            try:
                aad = envelope.dek_binding(
                    row.tenant_id, row.integration_id, bytes.fromhex(row.dek_id)
                )
                dek = await self._provider.unwrap(
                    WrappedKey(row.kek_id, row.kek_version, row.wrapped), aad
                )
            except (InvalidCiphertext, ValueError):
                tally.unreadable += 1
                log.warning("vault rewrap: DEK %s does not unwrap; left as is", row.dek_id)
                continue
            new = await self._provider.wrap(dek, aad)
            updates.append(
                Rewrapped(row.dek_id, row.kek_version, new.kek_id, new.kek_version, new.wrapped)
            )
        return updates

    async def self_test(self) -> None:
        """Wrap and unwrap a throwaway key with the primary KEK: proves the provider (file,
        HSM or KMS) is reachable and working. Raises VaultError (or the provider's error) if
        not; touches no stored key."""
        probe = self._rng(32)
        aad = b"calendar-gateway/self-test"
        wrapped = await self._provider.wrap(probe, aad)
        if not hmac.compare_digest(await self._provider.unwrap(wrapped, aad), probe):
            raise VaultError("the key provider returned a different key on unwrap")

    async def dek_counts(self) -> Mapping[int, int]:
        """How many DEKs each KEK version wraps (the database only; no provider call)."""
        return await self._store.count_by_kek_version()

    async def status(self) -> VaultStatus:
        """DEK counts per KEK version and the provider's versions and states."""
        return VaultStatus(
            kek_id=self._provider.kek_id,
            primary_version=await self._provider.primary_version(),
            versions=await self._provider.versions(),
            dek_counts=await self._store.count_by_kek_version(),
        )

    async def retire(self, version: int) -> None:
        """Retire a KEK version once no DEK depends on it (RetireRefused otherwise).

        Also refused until `retire_grace_s` after the version was superseded: other gateway
        processes learn of a rotation only when they next re-read the provider (local keyring:
        5 s, KMS: 30 s), and until then they may still wrap NEW data keys under the old
        version. Retiring it under their feet would strand those keys.
        """
        dependent = (await self._store.count_by_kek_version()).get(version, 0)
        if dependent:
            raise RetireRefused(
                f"KEK version {version} still wraps {dependent} data key(s); "
                "run rewrap after rotating, then retire"
            )
        superseded_at = next(
            (v.created_at for v in await self._provider.versions() if v.version > version),
            None,
        )
        if superseded_at is not None:
            age_s = (self._clock() - superseded_at).total_seconds()
            if age_s < self._retire_grace_s:
                raise RetireRefused(
                    f"KEK version {version} was superseded {max(age_s, 0):.0f} s ago; running "
                    f"gateways may still wrap new data keys under it. Retry in "
                    f"{self._retire_grace_s - age_s:.0f} s (grace: GATEWAY_KEK_RETIRE_GRACE_S)"
                )
        await self._provider.retire(version)
        log.info("vault KEK version retired kek_id=%s version=%d", self._provider.kek_id, version)
