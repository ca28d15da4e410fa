"""Implementations of the CLI's commands (parsing is in `gateway.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.apikeys import ApiKeyStore
from gateway.db.engine import create_engine
from gateway.db.migrate import ensure_migrated, upgrade
from gateway.db.serve_lock import serve_lock
from gateway.errors import InvalidInput
from gateway.settings import Settings, redact_url_password
from gateway.wiring import open_trust_keys, open_vault
from vault.providers import keyring_path
from vault.service import Vault, VaultStatus

if TYPE_CHECKING:
    from gateway.bench.report import Figure

out = Console()
# Error lines stay one line whatever the width: scripts and tests read them.
err = Console(stderr=True, soft_wrap=True)
# The collector's young-generation threshold while serving (see `_serve`).
GC_YOUNG_THRESHOLD = 50_000


@asynccontextmanager
async def _engine(settings: Settings, *, migrated: bool = True) -> AsyncIterator[AsyncEngine]:
    engine = await create_engine(settings.database_url, pool_size=settings.database_pool_size)
    try:
        if migrated:
            await ensure_migrated(engine)
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def _vault(settings: Settings) -> AsyncIterator[Vault]:
    async with _engine(settings) as engine:
        vault = await open_vault(settings, engine)
        try:
            yield vault
        finally:
            await vault.close()


def _migrated(settings: Settings, before: str | None, after: str | None) -> str:
    where = redact_url_password(settings.database_url)
    if before == after:
        return f"database {where} is up to date (revision {after})"
    return f"migrated {where} from {before or 'empty'} to revision {after}"


async def migrate(_args: argparse.Namespace, settings: Settings) -> int:
    async with _engine(settings, migrated=False) as engine:
        before, after = await upgrade(engine)
    out.print(_migrated(settings, before, after))
    return 0


async def serve(args: argparse.Namespace, settings: Settings) -> int:
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    with serve_lock(settings.database_url):
        return await _serve(args, settings, host, port)


async def _serve(args: argparse.Namespace, settings: Settings, host: str, port: int) -> int:
    # Imported here: the HTTP application (aiohttp routes, the MCP SDK, ...) takes seconds to
    # import, which `keys`, `migrate` and `api-keys` should not pay.
    from aiohttp import web

    from gateway.app import create_app
    from gateway.http.access_log import PathOnlyAccessLogger

    async with _engine(settings, migrated=False) as engine:
        if args.migrate:
            out.print(_migrated(settings, *await upgrade(engine)))
        await ensure_migrated(engine)
        keyring = keyring_path(settings.kek_uri)
        new_keyring = keyring is not None and not await asyncio.to_thread(os.path.lexists, keyring)
        runner = web.AppRunner(
            create_app(settings, engine=engine),
            handle_signals=False,
            access_log_class=PathOnlyAccessLogger,
            shutdown_timeout=settings.shutdown_timeout_s,
        )
        # Handlers first: the app's start-up already runs background work (the sync scheduler),
        # and a SIGTERM arriving then must still end in a clean shutdown, not a default kill.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            try:
                # Inside the try: a start-up that fails half-way (a bad keyring, a broken
                # deletion journal) still closes what had started, in order.
                await runner.setup()
                if new_keyring:
                    # Its loss loses every token: say so once, where the operator looks.
                    out.print(f"created key ring {keyring}; back it up apart from the database")
                if not stop.is_set():
                    site = web.TCPSite(runner, host, port)
                    await site.start()
                    # The port really bound: with --port 0 the kernel chooses one.
                    bound = runner.addresses[0][1]
                    out.print(f"calendar-gateway listening on http://{host}:{bound}")
                    # Everything start-up made (modules, the MCP SDK, schemas, pools) lives as
                    # long as the process: out of the collector's view, so a full collection
                    # during requests walks only what requests made (a tail-latency cost).
                    gc.freeze()
                    # A sync holds a calendar's rows, records and blocks (tens of thousands
                    # of objects) while it works: at the default threshold (700) the young
                    # generation was collected ~1,100 times and the older ones ~100 times per
                    # 100 calendars ingested, walking those live objects again and again
                    # (~6% of the ingest's CPU). Nearly everything dies by reference count
                    # anyway; at 50,000 the collector ran 3 times (43 ms against 330-440).
                    # Free/busy p99 under load did not move (bench api, runs interleaved).
                    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
                    await stop.wait()
                out.print("shutting down")
            finally:
                await runner.cleanup()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    return 0


def keys_status_table(status: VaultStatus) -> Table:
    """The `keys status` table: KEK versions, their states and the data keys each wraps."""
    table = Table(title=f"KEK {status.kek_id}")
    table.add_column("version", justify="right")
    table.add_column("state")
    table.add_column("data keys", justify="right")
    for version in status.versions:
        table.add_row(
            str(version.version), version.state, str(status.dek_counts.get(version.version, 0))
        )
    orphans = {
        v: n for v, n in status.dek_counts.items() if v not in {x.version for x in status.versions}
    }
    for version_number, count in sorted(orphans.items()):
        table.add_row(str(version_number), "[red]unknown to provider[/red]", str(count))
    return table


async def keys_status(_args: argparse.Namespace, settings: Settings) -> int:
    async with _vault(settings) as vault:
        status = await vault.status()
    out.print(keys_status_table(status))
    return 0


async def keys_rotate(_args: argparse.Namespace, settings: Settings) -> int:
    async with _vault(settings) as vault:
        version = await vault.rotate()
    out.print(
        f"KEK version {version} is now primary; run `{'calendar-gateway keys rewrap'}` "
        "to move existing data keys to it"
    )
    return 0


async def keys_rewrap(args: argparse.Namespace, settings: Settings) -> int:
    if args.batch_size < 1:
        err.print("calendar-gateway: error: --batch-size must be at least 1")
        return 2
    # On use: rich's progress bar costs every other command 0.04 s of start-up.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    async with _vault(settings) as vault:
        with Progress(
            TextColumn("rewrapping data keys"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        ) as progress:
            task = progress.add_task("rewrap", total=None)

            def report(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = await vault.rewrap(batch_size=args.batch_size, progress=report)
        # The trust keys file's secrets too (opening it rewraps them under the primary).
        await open_trust_keys(settings, vault)
    out.print(
        f"rewrapped {result.rewrapped} data keys under the primary KEK"
        + (
            f"; {result.skipped} changed meanwhile and will be picked up by the next run"
            if result.skipped
            else ""
        )
    )
    return 0


async def keys_retire(args: argparse.Namespace, settings: Settings) -> int:
    async with _vault(settings) as vault:
        # Opening the trust keys file rewraps its secrets under the primary first, so retiring
        # the version they were wrapped under cannot strand them.
        await open_trust_keys(settings, vault)
        await vault.retire(args.version)
    out.print(f"KEK version {args.version} is retired")
    return 0


async def receipts_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 for a genuine receipt, 1 (one line saying why) for anything else. Needs the
    trust keys file only: no database, no KEK."""
    from gateway.connections.receipts import MAX_RECEIPT_BYTES, InvalidReceipt, verify_receipt
    from vault.trust import read_public_keys

    path = Path(args.file)

    def read() -> bytes:
        with path.open("rb") as fh:
            return fh.read(MAX_RECEIPT_BYTES + 1)

    try:
        raw = await asyncio.to_thread(read)
    except OSError as exc:
        raise InvalidInput(f"receipt {path}: cannot be read ({exc.strerror})") from None
    keys = await asyncio.to_thread(read_public_keys, settings.trust_keys_path)
    try:
        signed = verify_receipt(raw, keys)
    except InvalidReceipt as exc:
        # One line whatever the terminal's width: scripts read it.
        err.print(
            f"calendar-gateway: error: receipt {path}: {exc}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 1
    receipt = signed.receipt
    out.print(
        f"genuine: receipt {signed.receipt_id} for integration {receipt.get('integration_id')} "
        f"of tenant {receipt.get('tenant_id')}, signed by {signed.key_id}",
        markup=False,
        highlight=False,
    )
    return 0


async def receipts_keys(_args: argparse.Namespace, settings: Settings) -> int:
    from vault.trust import read_public_keys

    keys = await asyncio.to_thread(read_public_keys, settings.trust_keys_path)
    table = Table(title=f"receipt-signing keys ({settings.trust_keys_path})")
    for column in ("key id", "algorithm", "created", "retired"):
        table.add_column(column)
    for key in keys:
        public = key.to_public()
        table.add_row(key.key_id, key.algorithm, public["created_at"], public["retired_at"] or "")
    out.print(table)
    return 0


async def receipts_rotate_key(_args: argparse.Namespace, settings: Settings) -> int:
    async with _vault(settings) as vault:
        trust = await open_trust_keys(settings, vault)
        new = await trust.rotate_signing_key()
    out.print(
        f"receipts are now signed with {new.key_id}; earlier keys stay listed (retired) so "
        "their receipts still verify",
        markup=False,
    )
    return 0


async def bench_vault(args: argparse.Namespace, _settings: Settings) -> int:
    """Run the vault benchmark in a throwaway folder (never on the configured database)."""
    from vault.bench import format_table, run_bench

    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="cg-bench-"))
    try:
        results = await run_bench(workdir, deks=args.deks)
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    print(format_table(results))
    return 0


def _backends(choice: str) -> tuple[str, ...]:
    return ("sqlite", "postgres") if choice == "both" else (choice,)


async def _run_bench(run: Callable[[Path], Awaitable[list[Figure]]]) -> int:
    """Run a benchmark in a throwaway folder (never the configured database) and print the
    machine line, the table and which aims the run met. A failed run keeps its folder
    (process logs) and says where."""
    from gateway.bench.report import format_aims, format_table
    from gateway.bench.runner import machine_line, machine_now

    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="cg-bench-"))
    start = await machine_now()
    try:
        figures = await run(workdir)
    except BaseException:
        err.print(f"benchmark logs kept in {workdir}")
        raise
    end = await machine_now()
    await asyncio.to_thread(shutil.rmtree, workdir, True)
    print(machine_line(start, end))
    print(format_table(figures))
    aims = format_aims(figures)
    if aims is not None:
        print(aims)
    return 0


async def bench_sync(args: argparse.Namespace, _settings: Settings) -> int:
    """`bench sync`: ingest and push-to-visible lag (gateway.bench.sync)."""
    from gateway.bench.sync import SyncBenchConfig, run_sync_bench

    config = SyncBenchConfig(
        integrations=args.integrations,
        events=args.events,
        backends=_backends(args.db),
        processes=args.processes,
        push_parallel=args.push_parallel,
        sync_concurrency=args.sync_concurrency,
    )
    return await _run_bench(lambda workdir: run_sync_bench(workdir, config))


async def bench_api(args: argparse.Namespace, _settings: Settings) -> int:
    """`bench api`: cached free/busy against a bare handler (gateway.bench.api)."""
    from gateway.bench.api import ApiBenchConfig, run_api_bench

    config = ApiBenchConfig(
        events=args.events,
        backends=_backends(args.db),
        concurrency=args.concurrency,
        duration_s=args.duration,
        size_large=max(0, args.large_events),
        memory_calendars=max(0, args.memory_calendars),
        batch=max(0, args.batch),
    )
    return await _run_bench(lambda workdir: run_api_bench(workdir, config))


async def bench_webhooks(args: argparse.Namespace, _settings: Settings) -> int:
    """`bench webhooks`: outbound webhook lag and throughput (gateway.bench.webhooks)."""
    from gateway.bench.webhooks import WebhookBenchConfig, run_webhook_bench

    config = WebhookBenchConfig(
        backends=_backends(args.db),
        rate=args.rate,
        duration_s=args.duration,
        burst=args.burst,
        integrations=max(0, args.integrations),
    )
    return await _run_bench(lambda workdir: run_webhook_bench(workdir, config))


async def bench_all(args: argparse.Namespace, _settings: Settings) -> int:
    """`bench` / `bench all`: every benchmark, one table (gateway.bench.runner)."""
    from dataclasses import replace

    from gateway.bench.runner import AllConfig, full_sizes, run_all

    backends = _backends(getattr(args, "db", "both"))
    config = full_sizes(backends) if getattr(args, "full", False) else AllConfig()
    sync = replace(config.sync, backends=backends)
    if getattr(args, "integrations", None):
        sync = replace(sync, integrations=args.integrations)
    if getattr(args, "events", None):
        sync = replace(sync, events=args.events)
    api = replace(config.api, backends=backends)
    # A small sync run asks for a small API run too: its calendars as small as the sync's.
    if getattr(args, "integrations", None):
        api = replace(
            api,
            memory_calendars=min(api.memory_calendars, args.integrations),
            batch=min(api.batch, args.integrations),
        )
    if getattr(args, "events", None):
        api = replace(
            api,
            memory_events=args.events,
            size_large=min(api.size_large, max(args.events * 10, api.size_small + 1)),
        )
    if getattr(args, "duration", None):
        api = replace(api, duration_s=args.duration, single_duration_s=args.duration)
    vault = config.vault
    if getattr(args, "deks", None):
        vault = replace(
            vault,
            deks=args.deks,
            ops=min(vault.ops, args.deks * 10),
            cold_ops=min(vault.cold_ops, args.deks),
        )
    config = replace(config, vault=vault, sync=sync, api=api)
    return await _run_bench(lambda workdir: run_all(workdir, config))


async def api_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    async with _engine(settings) as engine:
        created = await ApiKeyStore(engine).create(
            args.tenant, args.scopes.split(","), name=args.name
        )
    # The value alone on stdout, so scripts can capture it; the advice on stderr.
    print(created.value)
    err.print(
        f"API key {created.key.key_id} for tenant {created.key.tenant_id} "
        f"({' '.join(sorted(created.key.scopes))}). Store it now: it cannot be shown again."
    )
    return 0


async def api_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    async with _engine(settings) as engine:
        keys = await ApiKeyStore(engine).list(args.tenant)
    table = Table(title="API keys")
    for column in ("key id", "tenant", "name", "scopes", "created", "revoked"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.key_id,
            key.tenant_id,
            key.name or "",
            " ".join(sorted(key.scopes)),
            key.created_at.isoformat(timespec="seconds"),
            key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
        )
    out.print(table)
    return 0


async def api_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async with _engine(settings) as engine:
        key = await ApiKeyStore(engine).revoke(args.key_id)
    assert key.revoked_at is not None
    out.print(f"API key {key.key_id} revoked at {key.revoked_at.isoformat(timespec='seconds')}")
    return 0
