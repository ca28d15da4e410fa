"""Throughput of the vault against raw AES-256-GCM, on SQLite with the local keyring.

`run_bench()` is what `scripts/bench_vault.py` and `calendar-gateway bench vault` call; it
creates a throwaway keyring and database under `workdir` and returns one `BenchResult` per
measurement. Each ratio is against the matching raw AES-256-GCM operation on the same
200-byte payload (seal and rewrap against encryption with a fresh nonce, open against
decryption): the floor any sealing scheme pays.

Aims: warm-cache open at least 0.5x raw; rewrap at least 20,000 DEKs/s with the local KEK.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import MetaData, Table, event, insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from vault import envelope
from vault.cache import DekCache
from vault.envelope import SealContext
from vault.keyring import LocalKeyringProvider
from vault.service import Vault
from vault.store import SqlDekStore, data_keys_table

PAYLOAD_BYTES = 200


@dataclass(frozen=True)
class BenchResult:
    """One measurement: `ops` operations in `seconds`."""

    name: str
    ops: int
    seconds: float
    unit: str = "ops"
    baseline_ops_per_s: float | None = None
    baseline: str = ""  # which raw operation the ratio compares against

    @property
    def ops_per_s(self) -> float:
        """Operations (or DEKs) per second."""
        return self.ops / self.seconds if self.seconds > 0 else float("inf")

    @property
    def ratio(self) -> float | None:
        """Throughput relative to raw AES-256-GCM (1.0 = as fast)."""
        if self.baseline_ops_per_s is None:
            return None
        return self.ops_per_s / self.baseline_ops_per_s

    def as_dict(self) -> dict[str, object]:
        """Plain values, for JSON output."""
        return {
            "name": self.name,
            "ops": self.ops,
            "seconds": round(self.seconds, 6),
            "unit": self.unit,
            "ops_per_s": round(self.ops_per_s, 1),
            "ratio_to_raw_aes_gcm": None if self.ratio is None else round(self.ratio, 3),
            "ratio_baseline": self.baseline,
        }


# Each timing is the best of ROUNDS runs, as timeit does: on a shared machine the slowest
# runs measure the neighbours, and every ratio needs its two sides measured alike.
ROUNDS = 3


def _timed_sync(n: int, op: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            op()
        best = min(best, time.perf_counter() - start)
    return best


async def _timed_async(n: int, op: Callable[[], Awaitable[object]]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            await op()
        best = min(best, time.perf_counter() - start)
    return best


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    # What the gateway sets on its own SQLite engine, so the numbers match production.
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


async def run_bench(
    workdir: Path,
    *,
    ops: int = 50_000,
    cold_ops: int = 2_000,
    deks: int = 20_000,
    rewrap_batch_size: int = 1_000,
) -> list[BenchResult]:
    """Measure raw AES-GCM, seal, open (warm and cold cache) and rewrap; see module docstring.

    `workdir` must be an empty or new directory; its keyring and database are left behind
    for inspection and hold only benchmark keys.
    """
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    payload = os.urandom(PAYLOAD_BYTES)
    ctx = SealContext("bench-tenant", "bench-integration", "refresh_token")

    raw = AESGCM(os.urandom(32))
    raw_aad = ctx.encode()
    raw_blob = (nonce := os.urandom(12)) + raw.encrypt(nonce, payload, raw_aad)

    def raw_encrypt() -> bytes:
        n = os.urandom(12)
        return n + raw.encrypt(n, payload, raw_aad)

    def raw_decrypt() -> bytes:
        return raw.decrypt(raw_blob[:12], raw_blob[12:], raw_aad)

    enc_s = _timed_sync(ops, raw_encrypt)
    dec_s = _timed_sync(ops, raw_decrypt)
    enc_rate, dec_rate = ops / enc_s, ops / dec_s
    results = [
        BenchResult("raw AES-256-GCM encrypt (200 B)", ops, enc_s, "ops", enc_rate, "encrypt"),
        BenchResult("raw AES-256-GCM decrypt (200 B)", ops, dec_s, "ops", dec_rate, "decrypt"),
    ]

    engine = create_async_engine(f"sqlite+aiosqlite:///{workdir / 'bench.db'}")
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    try:
        metadata = MetaData()
        table = data_keys_table(metadata)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.run_sync(metadata.create_all)
        provider = await LocalKeyringProvider.open(workdir / "keyring.json")
        store = SqlDekStore(engine, table)
        warm = Vault(provider, store, DekCache(10_000, 3600))
        cold = Vault(provider, store, DekCache(0))
        await warm.ensure_data_key(ctx.tenant_id, ctx.integration_id)
        blob = await warm.seal(ctx, payload)
        if await warm.open(ctx, blob) != payload:  # warms the cache, checks the setup
            raise RuntimeError("benchmark setup: sealed payload did not open")

        results.append(
            BenchResult(
                "vault seal (DEK cache warm)",
                ops,
                await _timed_async(ops, lambda: warm.seal(ctx, payload)),
                baseline_ops_per_s=enc_rate,
                baseline="encrypt",
            )
        )
        results.append(
            BenchResult(
                "vault open (DEK cache warm)",
                ops,
                await _timed_async(ops, lambda: warm.open(ctx, blob)),
                baseline_ops_per_s=dec_rate,
                baseline="decrypt",
            )
        )
        results.append(
            BenchResult(
                "vault open (cache off: DB read + KEK unwrap)",
                cold_ops,
                await _timed_async(cold_ops, lambda: cold.open(ctx, blob)),
                baseline_ops_per_s=dec_rate,
                baseline="decrypt",
            )
        )

        await _fill(engine, table, provider, deks)
        await provider.rotate()
        start = time.perf_counter()
        outcome = await warm.rewrap(batch_size=rewrap_batch_size)
        rewrap_s = time.perf_counter() - start
        if outcome.total_remaining or outcome.rewrapped != deks + 1:
            raise RuntimeError(f"benchmark rewrap incomplete: {outcome}")
        results.append(
            BenchResult(
                f"rewrap {outcome.rewrapped} DEKs (SQLite, batch {rewrap_batch_size})",
                outcome.rewrapped,
                rewrap_s,
                unit="DEKs",
                baseline_ops_per_s=enc_rate,
                baseline="encrypt",
            )
        )
    finally:
        await engine.dispose()
    return results


async def _fill(engine: AsyncEngine, table: Table, provider: LocalKeyringProvider, n: int) -> None:
    """Insert n real wrapped DEKs in one executemany (setup, not measured)."""
    now = datetime.now(UTC)
    rows = []
    for i in range(n):
        # As the vault makes them, so the table's physical order is realistic.
        dek_id = envelope.new_dek_id(now_ms=int(time.time() * 1000))
        integration_id = f"bench-{i:06d}"
        wrapped = await provider.wrap(
            envelope.new_dek(), envelope.dek_binding("bench-tenant", integration_id, dek_id)
        )
        rows.append(
            {
                "dek_id": dek_id.hex(),
                "tenant_id": "bench-tenant",
                "integration_id": integration_id,
                "kek_id": wrapped.kek_id,
                "kek_version": wrapped.kek_version,
                "wrapped": wrapped.wrapped,
                "created_at": now,
                "rewrapped_at": None,
            }
        )
    async with engine.begin() as conn:
        await conn.execute(insert(table), rows)


def format_table(results: list[BenchResult]) -> str:
    """A small fixed-width table of the results."""
    lines = [f"{'measurement':<50} {'per second':>15}  {'x raw AES-256-GCM':<18}"]
    lines.append("-" * len(lines[0]))
    for r in results:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x {r.baseline}"
        lines.append(f"{r.name:<50} {r.ops_per_s:>10,.0f} {r.unit:<4}  {ratio:<18}")
    return "\n".join(lines)
