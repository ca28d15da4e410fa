"""The HTTP load generator, run as its own process so that it does not share an event loop
(or a core's time slices) with the server it measures:

    BENCH_LOAD_HEADERS='{"Authorization": "Bearer ..."}' \\
        python -m gateway.bench.load --url http://127.0.0.1:8080/x --concurrency 64 --duration 5

`concurrency` keep-alive connections each send one GET after another for `warmup` seconds (not
counted) and then `duration` seconds, in which every completed request is counted; one JSON
line on stdout gives the count, the requests per second and the p50/p99 latency. Headers come
from the environment, not argv, where any user of the machine could read an API key. Every
request is bounded in count (`--max-requests`) and in time, and only loopback addresses are
accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from gateway.bench.procs import BenchError
from gateway.bench.report import percentile

HEADERS_ENV = "BENCH_LOAD_HEADERS"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured (errors: answers other than `expect_status`, or failures)."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


async def generate(
    url: str,
    *,
    headers: dict[str, str],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    max_requests: int,
    expect_status: int = 200,
) -> LoadResult:
    """Drive `url` as described in the module doc; returns the measured window's figures."""
    if urlsplit(url).hostname not in LOOPBACK:
        raise ValueError("the load generator only targets loopback addresses")
    latencies_ms: list[float] = []
    errors = 0
    sent = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    start = time.perf_counter()
    measure_from = start + warmup_s
    end = measure_from + duration_s

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal errors, sent
        while sent < max_requests:
            began = time.perf_counter()
            if began >= end:
                return
            sent += 1
            ok = False
            try:
                async with http.get(url, headers=headers) as response:
                    await response.read()
                    ok = response.status == expect_status
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            done = time.perf_counter()
            # Completions inside the measured window count (those of requests sent during the
            # warm-up too: at steady state a request is in flight at every instant).
            if measure_from <= done <= end:
                if ok:
                    latencies_ms.append((done - began) * 1000)
                else:
                    errors += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    measured = min(time.perf_counter(), end) - measure_from
    if not latencies_ms:
        return LoadResult(0, errors, measured, 0.0, 0.0)
    return LoadResult(
        requests=len(latencies_ms),
        errors=errors,
        seconds=measured,
        p50_ms=percentile(latencies_ms, 0.50),
        p99_ms=percentile(latencies_ms, 0.99),
    )


async def run_load(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    concurrency: int = 64,
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    log_path: Path | None = None,
) -> LoadResult:
    """Run the generator as a subprocess (`python -m gateway.bench.load`) and read its answer."""
    env = dict(os.environ)
    env[HEADERS_ENV] = json.dumps(headers or {})
    args = [
        "-m",
        "gateway.bench.load",
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration_s),
        "--warmup",
        str(warmup_s),
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), duration_s + warmup_s + 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BenchError("the load generator did not finish") from None
    if log_path is not None:
        await asyncio.to_thread(log_path.write_bytes, err)
    if proc.returncode != 0:
        raise BenchError(f"the load generator failed: {err.decode(errors='replace')[-800:]}")
    data = json.loads(out.decode().strip().splitlines()[-1])
    return LoadResult(
        requests=int(data["requests"]),
        errors=int(data["errors"]),
        seconds=float(data["seconds"]),
        p50_ms=float(data["p50_ms"]),
        p99_ms=float(data["p99_ms"]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.load", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not measured")
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument("--expect-status", type=int, default=200)
    args = parser.parse_args(argv)
    headers = json.loads(os.environ.get(HEADERS_ENV) or "{}")
    result = asyncio.run(
        generate(
            args.url,
            headers=headers,
            concurrency=args.concurrency,
            duration_s=args.duration,
            warmup_s=args.warmup,
            max_requests=args.max_requests,
            expect_status=args.expect_status,
        )
    )
    print(json.dumps({**asdict(result), "rps": round(result.rps, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
