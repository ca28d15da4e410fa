"""`calendar-gateway bench` (or `bench all`): the vault, sync and API benchmarks in one run,
printed as one table (`gateway.bench.report`) under a line saying when and on what machine.

The default sizes finish in a few minutes on two cores; `full_sizes()` gives the issues'
sizes (1,000 integrations x 1,000 events for sync, 20,000 DEKs for the vault).
"""

from __future__ import annotations

import asyncio
import os
import time
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


# The reference loop's size: about 0.2 s of CPU on the development machines.
PROBE_ADDITIONS = 2_000_000


def cpu_probe_ms() -> float:
    """CPU milliseconds this thread spends on a fixed loop of Python additions: the machine's
    speed of the moment. The shared machines here ran the same code at half speed for minutes
    at a time (the push lag doubled with it), which the load average does not show."""
    began = time.thread_time()
    total = 0
    for n in range(PROBE_ADDITIONS):
        total += n
    return (time.thread_time() - began) * 1000


@dataclass(frozen=True)
class Machine:
    """The machine's state at one moment of a run."""

    at: datetime
    load: float
    probe_ms: float


async def machine_now() -> Machine:
    """The load average and the reference loop's CPU time now (the loop in a thread: it
    computes for ~0.2 s)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return Machine(datetime.now(UTC), load, await asyncio.to_thread(cpu_probe_ms))


def machine_line(start: Machine, end: Machine) -> str:
    """When and where: the UTC date, the core count, the load average and the reference loop's
    CPU time at the start and at the end (the machine may be shared: figures on a busy or a
    slowed machine are lower; compare runs whose reference loops agree)."""
    cores = os.cpu_count() or 0
    return (
        f"calendar-gateway bench, {start.at:%Y-%m-%d %H:%M} UTC, {cores} cores, "
        f"load average {start.load:.1f} at start and {end.load:.1f} at end, "
        f"reference loop ({PROBE_ADDITIONS:,} Python additions) {start.probe_ms:.0f} ms of CPU "
        f"at start and {end.probe_ms:.0f} ms at end"
    )
