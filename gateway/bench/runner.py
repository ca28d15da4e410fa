"""`calendar-gateway bench` (or `bench all`): the vault, sync and API benchmarks in one run,
printed as one table (`gateway.bench.report`) under a line saying when and on what machine.

The default sizes finish in a few minutes on two cores; `full_sizes()` gives the issues'
sizes (1,000 integrations x 1,000 events for sync, 20,000 DEKs for the vault).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gateway.bench.api import ApiBenchConfig, run_api_bench
from gateway.bench.report import Figure
from gateway.bench.sync import SyncBenchConfig, run_sync_bench
from vault.bench import BenchResult
from vault.bench import run_bench as run_vault_bench


@dataclass(frozen=True)
class VaultBenchConfig:
    ops: int = 20_000
    cold_ops: int = 1_000
    deks: int = 5_000


@dataclass(frozen=True)
class AllConfig:
    vault: VaultBenchConfig = field(default_factory=VaultBenchConfig)
    sync: SyncBenchConfig = field(
        default_factory=lambda: SyncBenchConfig(integrations=20, events=1_000)
    )
    api: ApiBenchConfig = field(default_factory=lambda: ApiBenchConfig(duration_s=3.0))


def full_sizes(backends: tuple[str, ...] = ("sqlite", "postgres")) -> AllConfig:
    """The sizes the issues name."""
    return AllConfig(
        VaultBenchConfig(ops=50_000, cold_ops=2_000, deks=20_000),
        SyncBenchConfig(integrations=1_000, events=1_000, backends=backends),
        ApiBenchConfig(duration_s=10.0, backends=backends, memory_calendars=1_000),
    )


def vault_figures(results: list[BenchResult]) -> list[Figure]:
    """The vault bench's results as table rows (ratios against raw AES-256-GCM)."""
    return [
        Figure(
            r.name,
            r.ops_per_s,
            f"{r.unit}/s",
            r.baseline_ops_per_s,
            f"raw {r.baseline}" if r.baseline else "",
        )
        for r in results
    ]


async def run_vault(workdir: Path, config: VaultBenchConfig) -> list[Figure]:
    results = await run_vault_bench(
        workdir / "vault", ops=config.ops, cold_ops=config.cold_ops, deks=config.deks
    )
    return vault_figures(results)


async def run_all(workdir: Path, config: AllConfig) -> list[Figure]:
    """Every benchmark, one after the other (never at once: they would measure each other)."""
    figures = await run_vault(workdir, config.vault)
    figures += await run_sync_bench(workdir, config.sync)
    figures += await run_api_bench(workdir, config.api)
    return figures


def machine_line() -> str:
    """When and where: the UTC date, the core count and the load average at the start (the
    machine may be shared; figures on a busy machine are lower)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cores = os.cpu_count() or 0
    return (
        f"calendar-gateway bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cores} cores, "
        f"load average {load:.1f} at start"
    )
