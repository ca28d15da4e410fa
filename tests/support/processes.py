"""Gateway processes for tests: real `calendar-gateway serve` children for the crash, shutdown
and multi-process tests, and `process`, what one more gateway process would own (a database
pool, a vault, a token manager), in this one.

The test's own stack (tests/support/stack.py) plays Google and owns the database; each
`serve_process` is a gateway started as an operator would start it (`python -m gateway serve`),
configured through the environment (`gateway_env`) to share that database, keyring and
emulator. It can be stopped with SIGTERM (graceful) or SIGKILL (crash). Its log output is
scanned for every secret the emulator issued when it ends.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import AuditLog
from gateway.connections.repository import IntegrationRepository
from gateway.connections.tokens import TokenManager
from gateway.db.engine import create_engine
from gateway.db.schema import calendars, integrations
from gateway.google.oauth_client import GoogleOAuthClient
from gateway.webhooks.outbox import IntegrationOutbox
from gateway.wiring import open_vault
from tests.support.stack import Stack, assert_no_secret_logged, issued_secrets


@dataclass
class ServeProcess:
    process: asyncio.subprocess.Process
    base_url: str
    log_path: Path

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no lease released, nothing flushed."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def terminate(self) -> None:
        """SIGTERM, as an orchestrator stopping a replica sends."""
        self.process.send_signal(signal.SIGTERM)


async def until(
    check: Callable[[], Awaitable[bool]],
    timeout_s: float = 60.0,
    describe: Callable[[], object] | None = None,
) -> None:
    """Wait for a condition another process (or task) brings about (not a duration);
    `describe` says what was seen instead when it never comes."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, (
            f"condition never became true: {describe() if describe else ''}"
        )
        await asyncio.sleep(0.02)


_LISTENING = re.compile(r"calendar-gateway listening on (http://127\.0\.0\.1:\d+)")


@asynccontextmanager
async def serve_process(
    stack: Stack, tmp_path: Path, name: str, **env: str
) -> AsyncIterator[ServeProcess]:
    """Start `calendar-gateway serve` on a port of its own and wait until /healthz answers.
    `env` adds or overrides environment variables (GATEWAY_SYNC_WORKER is on, the lease 60 s).

    It listens on port 0 and its start-up line says which port the kernel chose: a port found
    free here and handed over could be taken before the child binds it (by another xdist
    worker, or as the source port of any outgoing connection)."""
    log_path = tmp_path / f"{name}.log"
    environment = {**gateway_env(stack, lease_s=60.0), **env}
    with log_path.open("wb") as log_file:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            cwd=tmp_path,
            env=environment,
            stdout=log_file,
            stderr=log_file,
        )
    proc = ServeProcess(child, "", log_path)
    try:

        async def listening() -> bool:
            assert child.returncode is None, f"serve exited: {proc.log_text()[-2000:]}"
            found = _LISTENING.search(proc.log_text())
            if found:
                proc.base_url = found.group(1)
            return found is not None

        async def healthy() -> bool:
            assert child.returncode is None, f"serve exited: {proc.log_text()[-2000:]}"
            try:
                async with stack.http.get(proc.url("/healthz")) as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await until(listening, timeout_s=120)
        await until(healthy, timeout_s=120)
        yield proc
    finally:
        await proc.kill()
        # The secret scan of tests/support/stack.py covers the test's own process; this one's log
        # lines are checked here.
        secrets = issued_secrets(stack.google) | {stack.api_key, stack.other_tenant_key}
        assert_no_secret_logged(proc.log_text().splitlines(), secrets)


async def expire_leases(engine: AsyncEngine) -> None:
    """Time passes for a dead process's leases (sync and disconnect): they run out. The
    tests move them into the past rather than wait for them. A sync's claim made its calendar
    due again at the lease's end (`next_poll_at`, gateway.sync.lease_store): that time has
    passed too. Moving only the lease left the calendar waiting for its old end, so a
    restarted process synced it up to a lease (60 s here) late: under a loaded machine, when
    no push message came first to request the sync, a crash test waited a minute."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with engine.begin() as conn:
        leased = calendars.c.lease_owner.is_not(None)
        await conn.execute(
            update(calendars)
            .where(leased, calendars.c.next_poll_at > past)
            .values(next_poll_at=past)
        )
        await conn.execute(update(calendars).where(leased).values(lease_until=past))
        await conn.execute(
            update(integrations)
            .where(integrations.c.disconnect_lease_owner.is_not(None))
            .values(disconnect_lease_until=past)
        )


@dataclass
class Process:
    """What one gateway process would own: a database pool, a vault, a token manager."""

    db: AsyncEngine
    tokens: TokenManager
    integrations: IntegrationRepository


@asynccontextmanager
async def process(stack: Stack) -> AsyncIterator[Process]:
    db = await create_engine(stack.settings.database_url)
    vault = await open_vault(stack.settings, db)
    try:
        integrations = IntegrationRepository(db, announcer=IntegrationOutbox())
        tokens = TokenManager(
            repository=integrations,
            vault=vault,
            oauth=GoogleOAuthClient.from_settings(stack.http, stack.settings),
            audit=AuditLog(db),
            margin_s=stack.settings.token_refresh_margin_s,
        )
        yield Process(db, tokens, integrations)
    finally:
        await vault.close()
        await db.dispose()


def gateway_env(stack: Stack, lease_s: float) -> dict[str, str]:
    s = stack.settings
    assert s.google_client_secret is not None
    return {
        **os.environ,
        "GATEWAY_DATABASE_URL": s.database_url,
        "GATEWAY_KEK_URI": s.kek_uri,
        "GATEWAY_PUBLIC_URL": s.public_url,
        "GOOGLE_CLIENT_ID": s.google_client_id or "",
        "GOOGLE_CLIENT_SECRET": s.google_client_secret.get_secret_value(),
        "GOOGLE_AUTH_URI": s.google_auth_uri,
        "GOOGLE_TOKEN_URI": s.google_token_uri,
        "GOOGLE_REVOKE_URI": s.google_revoke_uri,
        "GOOGLE_CERTS_URI": s.google_certs_uri,
        "GOOGLE_CALENDAR_API_URL": s.google_calendar_api_url,
        "GATEWAY_SYNC_WORKER": "true",
        "GATEWAY_SYNC_TICK_S": "0.1",
        "GATEWAY_SYNC_LEASE_S": str(lease_s),
        "GATEWAY_LOG_LEVEL": "WARNING",
    }
