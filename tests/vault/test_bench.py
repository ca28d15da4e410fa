"""The benchmark behind `scripts/bench_vault.py` (and later `calendar-gateway bench vault`)."""

from __future__ import annotations

from pathlib import Path

from vault.bench import format_table, run_bench


async def test_a_small_run_reports_every_measurement_with_its_ratio(tmp_path: Path) -> None:
    results = await run_bench(tmp_path / "bench", ops=200, cold_ops=20, deks=300)
    names = [r.name for r in results]
    assert names[:5] == [
        "raw AES-256-GCM encrypt (200 B)",
        "raw AES-256-GCM decrypt (200 B)",
        "vault seal (DEK cache warm)",
        "vault open (DEK cache warm)",
        "vault open (cache off: DB read + KEK unwrap)",
    ]
    rewrap = results[5]
    assert rewrap.ops == 301 and rewrap.unit == "DEKs"  # 300 filled + the one used for seal/open
    assert all(r.ops_per_s > 0 and r.ratio is not None for r in results)
    table = format_table(results)
    assert "x raw AES-256-GCM" in table
    assert all(name in table for name in names)
