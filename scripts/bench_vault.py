"""Benchmark the token vault: `python scripts/bench_vault.py [--deks N] [--ops N] [--json]`.

Prints ops/s for raw AES-256-GCM, vault seal, vault open with the DEK cache warm and off, and
DEKs rewrapped per second on SQLite with the local keyring; each also as a ratio to raw
AES-GCM. The reusable function is `vault.bench.run_bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from vault.bench import format_table, run_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ops", type=int, default=50_000, help="operations per AES/seal/open run")
    parser.add_argument("--cold-ops", type=int, default=2_000, help="opens with the cache off")
    parser.add_argument("--deks", type=int, default=20_000, help="DEKs to rewrap")
    parser.add_argument("--batch-size", type=int, default=1_000, help="rewrap batch size")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cg-bench-") as tmp:
        results = asyncio.run(
            run_bench(
                Path(tmp),
                ops=args.ops,
                cold_ops=args.cold_ops,
                deks=args.deks,
                rewrap_batch_size=args.batch_size,
            )
        )
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
