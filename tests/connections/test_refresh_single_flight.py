"""Single-flight refresh across gateway processes sharing one PostgreSQL database.

The headline: two gateway processes (subprocesses running refresh_worker.py), 250 concurrent
`access_token()` calls each on an integration whose access token has expired. Google (the
emulator, served by this test over real HTTP) must see exactly ONE refresh, and every call in
both processes must get the same new token, the one stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from emulator.app import create_emulator_app
from emulator.state import EmulatorState
from gateway.connections.model import PURPOSE_ACCESS_TOKEN, PURPOSE_REFRESH_TOKEN
from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from tests.connections.refresh_worker import (
    Services,
    digest,
    open_services,
    seed_integration,
    stored_token,
)
from tests.support.databases import fresh_database_url
from tests.support.stack import (
    ALICE,
    ALICE_SUB,
    GATEWAY_CLIENT_ID,
    GATEWAY_CLIENT_SECRET,
    EmulatorSecrets,
)

WORKER = Path(__file__).with_name("refresh_worker.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
INTEGRATION_ID = "int_0000000000000000000000bb"
CALLS_PER_PROCESS = 250
CALENDAR_LIST = "/calendar/v3/users/me/calendarList"


@dataclass
class World:
    google: EmulatorState
    google_url: str
    database_url: str
    keyring: Path
    services: Services

    def refresh_calls(self) -> int:
        return self.google.inspector.token_calls_for(ALICE_SUB, "refresh_token")

    async def works(self, access_token: str) -> bool:
        headers = {"Authorization": f"Bearer {access_token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.google_url + CALENDAR_LIST, headers=headers) as response,
        ):
            return response.status == 200


@pytest.fixture
async def world(tmp_path: Path, emulator_secrets: EmulatorSecrets) -> AsyncIterator[World]:
    """PostgreSQL (required: skipped locally without it, failed when CI=true), the emulator,
    and Alice's integration with an access token that expired an hour ago."""
    async with fresh_database_url("postgres", tmp_path) as database_url:
        engine = await create_engine(database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
        google = EmulatorState(clock=time.time)
        google.add_user(ALICE_SUB, ALICE)
        google.add_client(GATEWAY_CLIENT_ID, GATEWAY_CLIENT_SECRET, ["http://127.0.0.1/cb"])
        emulator_secrets.watch(google)  # its secrets join the end-of-run log check
        server = TestServer(create_emulator_app(google), host="127.0.0.1", port=0)
        await server.start_server()
        google_url = str(server.make_url("/")).rstrip("/")
        keyring = tmp_path / "keyring.json"
        try:
            async with open_services(
                database_url, keyring, google_url, GATEWAY_CLIENT_ID, GATEWAY_CLIENT_SECRET
            ) as services:
                issued = google.issue_tokens(ALICE)
                await seed_integration(
                    services.repo,
                    services.vault,
                    integration_id=INTEGRATION_ID,
                    refresh_token=issued.refresh_token,
                    access_token=issued.token,
                    access_token_expires_at=datetime.now(UTC) - timedelta(hours=1),
                    google_sub=ALICE_SUB,
                )
                yield World(google, google_url, database_url, keyring, services)
        finally:
            await server.close()


async def _start_worker(world: World) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        "--database-url",
        world.database_url,
        "--keyring",
        str(world.keyring),
        "--google-url",
        world.google_url,
        "--client-id",
        GATEWAY_CLIENT_ID,
        "--integration-id",
        INTEGRATION_ID,
        "--calls",
        str(CALLS_PER_PROCESS),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
        env={**os.environ, "GOOGLE_CLIENT_SECRET": GATEWAY_CLIENT_SECRET},
    )


async def _expect_line(process: asyncio.subprocess.Process, timeout_s: float) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
    if not line:
        assert process.stderr is not None
        stderr = (await process.stderr.read()).decode(errors="replace")
        pytest.fail(f"worker exited early: {stderr[-2000:]}")
    return line.decode().strip()


async def test_two_processes_500_calls_on_an_expired_token_one_refresh(world: World) -> None:
    # A slow Google (0.5 s for the refresh) makes sure the second process asks while the first
    # one's refresh is in flight: only the row lock can keep it from refreshing too.
    world.google.inject_fault(delay_s=0.5, endpoint="token")
    workers = [await _start_worker(world) for _ in range(2)]
    try:
        # Both warmed up (imports, engine, vault key) before either starts calling.
        for worker in workers:
            assert await _expect_line(worker, 120) == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(b"go\n")
            await worker.stdin.drain()
        results = [json.loads(await _expect_line(worker, 120)) for worker in workers]
        for worker in workers:
            assert await asyncio.wait_for(worker.wait(), 120) == 0
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()

    assert world.refresh_calls() == 1, world.google.inspector.token_call_counts()
    new_token = await stored_token(
        world.services.repo, world.services.vault, INTEGRATION_ID, PURPOSE_ACCESS_TOKEN
    )
    assert new_token is not None and await world.works(new_token)
    for result in results:
        assert result == {"digests": [digest(new_token)], "errors": {}}


async def test_two_gateways_in_one_process_share_the_row_lock(world: World) -> None:
    """The same guarantee without subprocesses: two TokenManagers on two engines (two
    connection pools), so only PostgreSQL's row lock can keep them to one refresh. The
    rotated refresh token Google returns is stored once and used by the next refresh."""
    world.google.rotate_refresh_token_next(ALICE)
    # Slow enough that both gateways ask while the refresh is in flight (without the lock,
    # this test sees two refreshes).
    world.google.inject_fault(delay_s=0.3, endpoint="token")
    async with open_services(
        world.database_url,
        world.keyring,
        world.google_url,
        GATEWAY_CLIENT_ID,
        GATEWAY_CLIENT_SECRET,
    ) as other:
        calls = [world.services.tokens.access_token(INTEGRATION_ID) for _ in range(100)]
        calls += [other.tokens.access_token(INTEGRATION_ID) for _ in range(100)]
        tokens = set(await asyncio.gather(*calls))
    assert world.refresh_calls() == 1
    (token,) = tokens
    assert await world.works(token)
    (grant,) = world.google.active_grants(ALICE_SUB, GATEWAY_CLIENT_ID)
    stored_refresh = await stored_token(
        world.services.repo, world.services.vault, INTEGRATION_ID, PURPOSE_REFRESH_TOKEN
    )
    assert stored_refresh == grant.refresh_token
    assert await world.services.tokens.force_refresh(INTEGRATION_ID) != token
    assert world.refresh_calls() == 2
