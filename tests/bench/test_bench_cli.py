"""`calendar-gateway bench sync|api|all` at tiny sizes: each prints the machine line and one
table with the rows a reader expects, every figure a positive number. No timing is asserted:
speed is what the benchmarks print, not what tests check."""

from __future__ import annotations

import os
import re

import pytest

from tests.support.cli import main_in_process
from tests.support.services import postgres_url, require_postgres


def _figures(out: str) -> dict[str, float]:
    """measurement -> value, from the printed table."""
    lines = out.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("measurement"))
    found: dict[str, float] = {}
    for line in lines[start + 2 :]:
        if line.startswith("aims: "):
            break  # the line under the table (`_aims`)
        # Columns are separated by at least two spaces; the value is the second column.
        cells = re.split(r"\s{2,}", line.strip())
        found[cells[0]] = float(cells[1].replace(",", ""))
    return found


def _run_printing(command: str, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, float], str]:
    """The figures and the whole output."""
    # An empty settings file: a developer's .env must not reach the bench.
    assert main_in_process(["--env-file", os.devnull, *command.split()]) == 0
    out = capsys.readouterr().out
    machine = re.search(
        r"^calendar-gateway bench, .* UTC, \d+ cores, load average [\d.]+ at start and "
        r"[\d.]+ at end, reference loop \(2,000,000 Python additions\) (\d+) ms of CPU at "
        r"start and (\d+) ms at end$",
        out,
        re.M,
    )
    assert machine, out
    # The machine's speed of the moment, measured: a real loop takes some CPU time.
    assert int(machine.group(1)) > 0 and int(machine.group(2)) > 0, machine.group(0)
    figures = _figures(out)
    assert all(value > 0 for value in figures.values()), figures
    return figures, out


def _aims(out: str) -> tuple[int, int, str]:
    """The line under the table: aims met, aims judged, and what was not met."""
    found = re.search(r"^aims: (\d+) of (\d+) met in this run(?:; not met: (.*))?$", out, re.M)
    assert found is not None, out
    return int(found[1]), int(found[2]), found[3] or ""


def _run(command: str, capsys: pytest.CaptureFixture[str]) -> dict[str, float]:
    return _run_printing(command, capsys)[0]


def test_bench_sync_prints_ingest_and_push_lag(capsys: pytest.CaptureFixture[str]) -> None:
    figures, out = _run_printing("bench sync --integrations 2 --events 40 --db sqlite", capsys)
    # What the lag follows: the gateways' CPU per pushed change, in the p50 row's note.
    per_change = re.search(r"gateways (\d+\.\d) ms CPU per change", out)
    assert per_change is not None and float(per_change[1]) > 0, out
    # How much of the ingest SQLite's one writer was held, from the gateway's /metrics.
    writer = re.search(r"SQLite's writer held (\d+)% of it, (\d+) ms per calendar", out)
    assert writer is not None and int(writer[1]) > 0 and int(writer[2]) > 0, out
    assert list(figures) == [
        "raw INSERT of event rows (SQLite, 1 proc)",
        "parse+insert baseline, one core (SQLite, 1 proc)",
        "parse+insert baseline, events only (SQLite, 1 proc)",
        "sync ingest (SQLite, 1 proc)",
        "sync ingest per gateway CPU second (SQLite, 1 proc)",
        "push-to-visible lag p50 (SQLite, 1 proc)",
        "push-to-visible lag p99 (SQLite, 1 proc)",
    ]
    # Under the table, issue 13's aims of these rows, judged on the figures printed. The
    # 20,000 events a second is the aim at 1,000 x 1,000: two calendars state it, unjudged.
    met, judged, missed = _aims(out)
    assert judged == 2 and met == 2 - missed.count("(aim "), out
    assert "sync ingest (SQLite" not in missed, out
    ingest = next(line for line in out.splitlines() if line.startswith("sync ingest (SQLite"))
    assert "aim >= 20,000 at 1,000 x 1,000 (not judged at this size)" in ingest, out
    p99 = figures["push-to-visible lag p99 (SQLite, 1 proc)"]
    assert ("push-to-visible lag p99" in missed) == (p99 >= 250), out


def test_bench_api_prints_bare_and_cached_freebusy(capsys: pytest.CaptureFixture[str]) -> None:
    figures, out = _run_printing(
        "bench api --events 40 --db sqlite --concurrency 4 --duration 0.5"
        " --large-events 300 --memory-calendars 2 --batch 3",
        capsys,
    )
    # The backend's throughput is compared with the bare runs right before and after its own
    # (their mean), not with the first bare run minutes earlier.
    row = next(line for line in out.splitlines() if line.startswith("freebusy from cache"))
    bracket = re.search(r"bare ([\d,]+) and ([\d,]+) req/s, p99 [\d.]+ and [\d.]+ ms right", row)
    ratio = re.search(r"(\d+\.\d+)x bare", row)
    assert bracket is not None and ratio is not None, row
    mean = sum(float(n.replace(",", "")) for n in bracket.groups()) / 2
    served = figures["freebusy from cache (SQLite), 4 connections"]
    assert float(ratio[1]) == pytest.approx(served / mean, abs=0.006), row
    # Throughput, p99, one request and calendar size: the four aims judged under the table.
    met, judged, missed = _aims(out)
    assert judged == 4 and met == 4 - missed.count("(aim "), out
    single = figures["freebusy single request p50 (SQLite)"]
    assert ("freebusy single request p50" in missed) == (single > 1), out
    assert list(figures) == [
        "bare aiohttp handler, 4 connections",
        "freebusy from cache (SQLite), 4 connections",
        "freebusy p50 (SQLite), 4 connections",
        "freebusy p99 (SQLite), 4 connections",
        "freebusy single request p50 (SQLite)",
        "freebusy one week, 300-event calendar (SQLite)",
        "POST /v1/freebusy, 3 integrations (SQLite)",
        "POST /v1/slots, 3 integrations (SQLite)",
        "gateway memory after loading 2 calendars (SQLite)",
    ]


def test_bench_without_a_subcommand_runs_everything_on_postgres(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgres()
    monkeypatch.setenv("GATEWAY_BENCH_POSTGRES_URL", postgres_url())
    figures = _run(
        "bench --integrations 2 --events 30 --deks 50 --db postgres --duration 0.5",
        capsys,
    )
    names = list(figures)
    # The vault's rows first, then sync (two gateway processes on one database), then api.
    assert names[0] == "raw AES-256-GCM encrypt (200 B)"
    assert "vault open (DEK cache warm)" in names
    assert "sync ingest (PostgreSQL, 2 proc)" in names
    assert "parse+insert baseline, one core (PostgreSQL, 2 proc)" in names
    assert "push-to-visible lag p99 (PostgreSQL, 2 proc)" in names
    assert "bare aiohttp handler, 64 connections" in names
    assert "freebusy single request p50 (PostgreSQL)" in names
    assert "freebusy one week, 300-event calendar (PostgreSQL)" in names
    assert "POST /v1/slots, 2 integrations (PostgreSQL)" in names
    assert names[-1] == "gateway memory after loading 2 calendars (PostgreSQL)"


def test_bench_webhooks_prints_lag_and_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    figures = _run(
        "bench webhooks --db sqlite --rate 20 --duration 0.5 --burst 20 --integrations 2", capsys
    )
    assert list(figures) == [
        "webhook lag p50 (sqlite)",
        "webhook lag p99 (sqlite)",
        "sync change rate (sqlite)",
        "webhook deliveries/s (sqlite)",
        "webhook lag from a change at Google p50 (sqlite)",
        "webhook lag from a change at Google p99 (sqlite)",
    ]
