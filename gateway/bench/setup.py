"""What every benchmark stands on: a throwaway database, the Google emulator as a subprocess
seeded through its control API, gateways as `calendar-gateway serve` subprocesses, and bench
integrations whose tokens are sealed by the real vault.

Nothing here touches the configured database or key ring: each run creates its own SQLite file
or PostgreSQL database (dropped afterwards) and a key ring under the run's folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.apikeys import ApiKeyStore
from gateway.bench.procs import BenchError, free_port, process
from gateway.connections.model import (
    PURPOSE_ACCESS_TOKEN,
    PURPOSE_REFRESH_TOKEN,
    Integration,
    Status,
    new_integration_id,
)
from gateway.connections.repository import IntegrationRepository, SealedTokens
from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.settings import (
    DEFAULT_GOOGLE_SCOPES,
    Settings,
    load_settings,
    redact_url_password,
)
from gateway.webhooks.outbox import IntegrationOutbox
from gateway.wiring import open_vault
from vault.envelope import SealContext

BACKENDS = ("sqlite", "postgres")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_URL_ENV = "GATEWAY_BENCH_POSTGRES_URL"
CLIENT_ID = "calendar-gateway-bench.apps.googleusercontent.com"
CLIENT_SECRET = "emu-bench-secret"  # noqa: S105 - the emulator's throwaway client
TENANT = "bench"
# A folder: when set, every bench gateway runs under cProfile and leaves its profile there.
PROFILE_ENV = "GATEWAY_BENCH_PROFILE_DIR"
# Inherited settings would point the subprocesses at someone's real configuration.
_SETTING_PREFIXES = ("GATEWAY_", "GOOGLE_")


def postgres_admin_url() -> str:
    """Where bench databases are created (GATEWAY_BENCH_POSTGRES_URL, a libpq URL)."""
    return os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@asynccontextmanager
async def database(backend: str, workdir: Path) -> AsyncIterator[str]:
    """The SQLAlchemy URL of a new database migrated to head; a PostgreSQL one is dropped
    afterwards."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / f'bench-{secrets.token_hex(3)}.db'}"
        await _migrate(url)
        yield url
        return
    admin_url = postgres_admin_url().replace("postgresql://", "postgresql+asyncpg://", 1)
    name = f"cgbench_{secrets.token_hex(6)}"
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        url = _with_database(admin_url, name)
        await _migrate(url)
        yield url
    finally:
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(admin_url: str, statement: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE) on the admin database."""
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    except (OSError, SQLAlchemyError) as exc:
        raise BenchError(
            f"PostgreSQL at {redact_url_password(admin_url)} refused the bench database "
            f"({type(exc).__name__}); set {POSTGRES_URL_ENV} or run with --db sqlite"
        ) from None
    finally:
        await engine.dispose()


async def _migrate(url: str) -> None:
    engine = await create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def _sub(email: str) -> str:
    return str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16)).zfill(21)


@dataclass
class Emulator:
    """The Google emulator subprocess and its control API."""

    url: str
    http: aiohttp.ClientSession
    pid: int

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, f"{self.url}/_emulator{path}", json=body) as r:
            if r.status >= 300:
                raise BenchError(f"emulator {method} {path}: {r.status} {await r.text()}")
            return await r.json()

    async def add_users(self, emails: Sequence[str], *, events: int, parallel: int = 4) -> int:
        """Create the users and seed each primary calendar with `events` generated events
        (seed = the user's number, so every run lists the same events); returns how many
        events the emulator holds for them."""
        gate = asyncio.Semaphore(parallel)
        total = 0

        async def one(n: int, email: str) -> None:
            nonlocal total
            async with gate:
                await self._call("POST", "/users", {"sub": _sub(email), "email": email})
                if events > 0:
                    report = await self._call(
                        "POST", f"/calendar/calendars/{email}/seed", {"seed": n, "count": events}
                    )
                    total += int(report.get("inserted", events)) if report else events

        await asyncio.gather(*(one(n, e) for n, e in enumerate(emails, start=1)))
        return total

    async def settings(self, **values: Any) -> None:
        await self._call("POST", "/calendar/settings", values)

    async def tokens(self, email: str, scopes: Sequence[str]) -> dict[str, Any]:
        """Tokens for `email` granted to the bench client, without the browser dance."""
        return dict(
            await self._call(
                "POST", f"/users/{email}/tokens", {"client_id": CLIENT_ID, "scopes": list(scopes)}
            )
        )

    async def load_events(self, email: str, spans: Sequence[tuple[datetime, datetime]]) -> None:
        """Put one timed event per (start, end) into the user's primary calendar, in chunks
        (the control route's `load`: the benchmark decides where every event lies)."""
        for first in range(0, len(spans), 2_000):
            items = [
                {
                    "id": f"bench{first + n:08d}",
                    "summary": "bench",
                    "start": {"dateTime": start.isoformat()},
                    "end": {"dateTime": end.isoformat()},
                }
                for n, (start, end) in enumerate(spans[first : first + 2_000])
            ]
            await self._call("POST", f"/calendar/calendars/{email}/load", {"items": items})

    async def insert_event(self, email: str, start: datetime, end: datetime) -> str:
        """A change "in Google Calendar" (the emulator pushes it to watch channels)."""
        body = {
            "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": end.isoformat()},
            "summary": "bench change",
        }
        async with self.http.post(
            f"{self.url}/_emulator/calendar/calendars/{email}/events", json=body
        ) as r:
            if r.status != 200:
                raise BenchError(f"emulator insert: {r.status} {await r.text()}")
            return str((await r.json())["id"])


@asynccontextmanager
async def emulator(workdir: Path) -> AsyncIterator[Emulator]:
    """`python -m emulator` on a free port with the bench OAuth client."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        "-m",
        "emulator",
        "--port",
        str(port),
        "--client-id",
        CLIENT_ID,
        "--client-secret",
        CLIENT_SECRET,
        "--redirect-uri",
        "http://127.0.0.1/oauth/google/callback",
    ]
    async with (
        process(
            "emulator",
            args,
            log_path=workdir / "emulator.log",
            ready_url=f"{url}/_emulator/health",
        ) as proc,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http,
    ):
        google = Emulator(url, http, proc.pid)
        # Webhooks on http://127.0.0.1 (Google itself wants https).
        await google.settings(allowInsecureLoopbackWebhooks=True)
        yield google


@dataclass
class Gateway:
    """One `calendar-gateway serve` subprocess."""

    url: str
    port: int
    pid: int


def gateway_env(
    database_url: str, workdir: Path, google_url: str, port: int, **extra: str
) -> dict[str, str]:
    """The environment of a bench gateway: this run's database and key ring, the emulator as
    Google, push to its own loopback address. `extra` adds or overrides GATEWAY_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    env.update(
        {
            "GATEWAY_DATABASE_URL": database_url,
            "GATEWAY_KEK_URI": f"file:{workdir / 'keyring.json'}",
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "GATEWAY_LOG_FORMAT": "json",
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GOOGLE_CLIENT_ID": CLIENT_ID,
            "GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
            "GOOGLE_AUTH_URI": f"{google_url}/o/oauth2/v2/auth",
            "GOOGLE_TOKEN_URI": f"{google_url}/token",
            "GOOGLE_REVOKE_URI": f"{google_url}/revoke",
            "GOOGLE_CERTS_URI": f"{google_url}/oauth2/v1/certs",
            "GOOGLE_CALENDAR_API_URL": f"{google_url}/calendar/v3/",
        }
    )
    env.update(extra)
    return env


def bench_settings(env: dict[str, str]) -> Settings:
    """The gateway's Settings for `env` (for the set-up done in this process); each variable
    given overrides the process's own environment."""
    fields = {
        str(field.validation_alias.choices[0]): name  # type: ignore[union-attr]
        for name, field in Settings.model_fields.items()
    }
    return load_settings(env_file=None, **{fields[k]: v for k, v in env.items() if k in fields})


@asynccontextmanager
async def gateways(
    count: int,
    database_url: str,
    workdir: Path,
    google_url: str,
    **extra: str,
) -> AsyncIterator[list[Gateway]]:
    """`count` gateway processes on one database, each on its own port, all ready."""
    async with AsyncExitStack() as stack:
        started: list[Gateway] = []
        for n in range(count):
            port = free_port()
            env = gateway_env(database_url, workdir, google_url, port, **extra)
            # No settings file: only the environment built here configures the gateway.
            args = ["-m", "gateway", "--env-file", os.devnull, "serve"]
            profile_dir = os.environ.get(PROFILE_ENV)
            if profile_dir:
                # For finding bottlenecks: each gateway writes a cProfile file when stopped.
                args = ["-m", "cProfile", "-o", f"{profile_dir}/gateway-{n}-{port}.prof", *args]
            proc = await stack.enter_async_context(
                process(
                    f"gateway {n}",
                    args,
                    log_path=workdir / f"gateway-{n}.log",
                    env=env,
                    ready_url=f"http://127.0.0.1:{port}/healthz",
                )
            )
            started.append(Gateway(f"http://127.0.0.1:{port}", port, proc.pid))
        yield started


@dataclass
class Prepared:
    """Integrations ready to be inserted (tokens sealed), and an API key of their tenant."""

    items: list[tuple[Integration, SealedTokens]] = field(repr=False)
    emails: dict[str, str]  # integration id -> Google address
    api_key: str = field(repr=False)


async def prepare_integrations(
    engine: AsyncEngine, settings: Settings, google: Emulator, emails: Sequence[str]
) -> Prepared:
    """For each address: tokens from the emulator, sealed by the vault (its data key created
    now), as a new active integration of tenant `bench` (not inserted yet: the caller times
    from the insert)."""
    vault = await open_vault(settings, engine)
    scopes = list(DEFAULT_GOOGLE_SCOPES)
    items: list[tuple[Integration, SealedTokens]] = []
    by_id: dict[str, str] = {}
    try:
        for n, email in enumerate(emails):
            issued = await google.tokens(email, scopes)
            integration_id = new_integration_id(secrets.token_bytes(12))
            now = datetime.now(UTC)
            await vault.ensure_data_key(TENANT, integration_id)
            access = await vault.seal(
                SealContext(TENANT, integration_id, PURPOSE_ACCESS_TOKEN),
                str(issued["access_token"]).encode(),
            )
            refresh = await vault.seal(
                SealContext(TENANT, integration_id, PURPOSE_REFRESH_TOKEN),
                str(issued["refresh_token"]).encode(),
            )
            expires = now + timedelta(seconds=int(issued["expires_in"]))
            items.append(
                (
                    Integration(
                        id=integration_id,
                        tenant_id=TENANT,
                        user_id=f"rep-{n}",
                        status=Status.ACTIVE,
                        google_sub=_sub(email),
                        google_email=email,
                        granted_scopes=frozenset(str(issued["scope"]).split()),
                        created_at=now,
                        updated_at=now,
                        access_token_expires_at=expires,
                    ),
                    SealedTokens(refresh, access, expires),
                )
            )
            by_id[integration_id] = email
    finally:
        await vault.close()
    key = await ApiKeyStore(engine).create(TENANT, ["calendar:read"], name="bench")
    return Prepared(items, by_id, key.value)


async def insert_integrations(engine: AsyncEngine, prepared: Prepared) -> float:
    """Insert the prepared integrations in one transaction; returns the instant (monotonic)
    at which the insert began."""
    began = time.monotonic()
    await IntegrationRepository(engine, announcer=IntegrationOutbox()).insert_many(prepared.items)
    return began


def bench_emails(count: int, prefix: str = "rep") -> list[str]:
    return [f"{prefix}{n:05d}@bench.example.com" for n in range(count)]
