"""The demo's running system: the Google emulator and the gateway, in this process, each on its
own ephemeral port of 127.0.0.1, talking to each other over real HTTP.

The gateway runs on embedded defaults (SQLite and a local keyring file) in a scratch folder and
reads no `.env` and no environment: a developer's configuration (perhaps pointing at the real
Google) must not leak into the demo. Only timings are shortened, so that a sync or a push is
seen within a second rather than a minute.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from sqlalchemy.ext.asyncio import AsyncEngine

from emulator.app import create_emulator_app
from emulator.server import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_USERS, prepare_state
from emulator.state import EmulatorState
from gateway.apikeys import SCOPES, ApiKeyStore
from gateway.app import create_app
from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from gateway.http.access_log import PathOnlyAccessLogger
from gateway.settings import Settings

HOST = "127.0.0.1"
TENANT = "demo"
# Where the user's browser is sent back to. Nothing listens there: the walk stops at it, as
# the agent's web app would take over.
RETURN_URL = "http://localhost:3000/calendar/connected"
DATABASE_FILE = "gateway.db"
KEYRING_FILE = "keyring.json"


class EmbeddedSettings(Settings):
    """Settings from the constructor's arguments and the defaults only (no .env, no
    environment variables)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def demo_settings(workdir: Path, *, public_url: str, google_url: str) -> Settings:
    """The gateway's settings for the demo: embedded defaults in `workdir`, Google = emulator."""
    overrides: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{workdir / DATABASE_FILE}",
        "kek_uri": f"file:{workdir / KEYRING_FILE}",
        "public_url": public_url,
        "allowed_return_urls": [RETURN_URL],
        "google_client_id": DEMO_CLIENT_ID,
        "google_client_secret": DEMO_CLIENT_SECRET,
        "google_auth_uri": f"{google_url}/o/oauth2/v2/auth",
        "google_token_uri": f"{google_url}/token",
        "google_revoke_uri": f"{google_url}/revoke",
        "google_certs_uri": f"{google_url}/oauth2/v1/certs",
        "google_calendar_api_url": f"{google_url}/calendar/v3/",
        "push_enabled": True,
        # Shorter than the defaults (1 s and 60 s) so that the demo's sync and its push
        # channel happen while the reader watches; the code paths are the same.
        "sync_tick_s": 0.2,
        "push_maintenance_interval_s": 0.5,
    }
    return EmbeddedSettings(**overrides)


@dataclass
class DemoStack:
    """What the steps need to know about the running system."""

    workdir: Path
    settings: Settings
    engine: AsyncEngine
    google_url: str
    gateway_url: str
    api_key: str = field(repr=False)

    @property
    def database_path(self) -> Path:
        return self.workdir / DATABASE_FILE

    @property
    def database_files(self) -> list[Path]:
        """The SQLite file and its write-ahead log and shared-memory files."""
        base = self.database_path
        return [base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")]


def _listening_socket() -> socket.socket:
    # Bound before the gateway's settings are made, so GATEWAY_PUBLIC_URL (the OAuth redirect
    # and the push address) names the port the gateway will really serve on.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    return sock


@asynccontextmanager
async def running_stack(workdir: Path) -> AsyncIterator[DemoStack]:
    """Start the emulator and the gateway (migrated, with an API key) and stop them after."""
    sock = _listening_socket()
    public_url = f"http://{HOST}:{sock.getsockname()[1]}"
    google = prepare_state(
        EmulatorState(),
        seed_users=DEMO_USERS,
        redirect_uris=[f"{public_url}/oauth/google/callback"],
    )
    google_runner = web.AppRunner(create_emulator_app(google), access_log=None)
    await google_runner.setup()
    engine: AsyncEngine | None = None
    gateway_runner: web.AppRunner | None = None
    try:
        await web.TCPSite(google_runner, HOST, 0).start()
        google_url = f"http://{HOST}:{google_runner.addresses[0][1]}"
        settings = demo_settings(workdir, public_url=public_url, google_url=google_url)
        engine = await create_engine(settings.database_url, pool_size=settings.database_pool_size)
        await upgrade(engine)
        created = await ApiKeyStore(engine).create(TENANT, SCOPES, name="demo")
        gateway_runner = web.AppRunner(
            create_app(settings, engine=engine),
            handle_signals=False,
            access_log_class=PathOnlyAccessLogger,
        )
        await gateway_runner.setup()
        await web.SockSite(gateway_runner, sock).start()
        yield DemoStack(
            workdir=workdir,
            settings=settings,
            engine=engine,
            google_url=google_url,
            gateway_url=public_url,
            api_key=created.value,
        )
    finally:
        if gateway_runner is not None:
            await gateway_runner.cleanup()
        await google_runner.cleanup()
        if engine is not None:
            await engine.dispose()
        sock.close()
