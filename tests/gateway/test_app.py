"""The HTTP app: health, problem+json for every error, start-up checks."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.db.engine import create_engine
from gateway.errors import NotMigratedError
from gateway.settings import Settings, load_settings
from vault.errors import KeyringError


def _settings(tmp_path: Path, database_url: str) -> Settings:
    return load_settings(
        env_file=None, database_url=database_url, kek_uri=f"file:{tmp_path / 'keyring.json'}"
    )


@pytest.fixture
async def client(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = create_app(_settings(tmp_path, database_url), engine=engine)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_healthz(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_unknown_route_is_problem_json(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/v1/nothing-here")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["status"] == 404
    assert body["code"] == "not_found"
    assert set(body) >= {"type", "title", "status", "detail", "code"}


async def test_wrong_method_is_problem_json_with_allow(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.post("/healthz", data=b"{}")
    assert response.status == 405
    assert response.content_type == "application/problem+json"
    assert "GET" in response.headers["Allow"]
    assert (await response.json())["code"] == "method_not_allowed"


async def test_first_start_creates_a_private_keyring(
    client: TestClient[web.Request, web.Application], tmp_path: Path
) -> None:
    keyring = tmp_path / "keyring.json"
    assert keyring.exists()
    assert keyring.stat().st_mode & 0o777 == 0o600


async def test_app_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    eng = await create_engine(url)
    try:
        app = create_app(_settings(tmp_path, url), engine=eng)
        with pytest.raises(NotMigratedError):
            async with TestClient(TestServer(app)):
                pass
    finally:
        await eng.dispose()


async def test_app_refuses_a_group_readable_keyring(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, database_url)
    async with TestClient(TestServer(create_app(settings, engine=engine))):
        pass  # first start generates the keyring
    os.chmod(tmp_path / "keyring.json", 0o640)
    with pytest.raises(KeyringError, match=r"keyring\.json"):
        async with TestClient(TestServer(create_app(settings, engine=engine))):
            pass
