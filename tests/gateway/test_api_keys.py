"""API keys: created once, stored only as a hash, scoped, tenant-bound, revocable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.apikeys import ApiKeyStore
from gateway.db.engine import create_engine
from gateway.db.schema import api_keys
from gateway.errors import InvalidInput, NotFound, Unauthenticated
from gateway.http.appkeys import APIKEYS_KEY
from gateway.http.auth import principal, requires_scope
from gateway.http.problems import problem_middleware
from tests.support.cli import run_cli


async def test_created_key_authenticates_as_its_tenant_with_its_scopes(engine: AsyncEngine) -> None:
    store = ApiKeyStore(engine)
    created = await store.create("acme", ["calendar:read", "connections:read"], name="agent")
    who = await store.authenticate(created.value)
    assert who.tenant_id == "acme"
    assert who.key_id == created.key.key_id
    assert who.scopes == {"calendar:read", "connections:read"}
    assert created.value not in repr(created)


async def test_only_a_hash_of_the_secret_is_stored(engine: AsyncEngine) -> None:
    created = await ApiKeyStore(engine).create("acme", ["calendar:read"])
    secret = created.value[29:]  # after "cgw_" + 24 hex key id + "_"
    async with engine.connect() as conn:
        row = (await conn.execute(select(api_keys))).mappings().one()
    stored = b"".join(str(v).encode() if not isinstance(v, bytes) else v for v in row.values())
    assert secret.encode() not in stored
    assert created.value.encode() not in stored


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),  # wrong secret
        lambda v: v.replace("cgw_", "cgx_"),  # wrong prefix
        lambda v: v[:-5],  # truncated
        lambda v: "cgw_" + "0" * 24 + v[28:],  # unknown key id
        lambda v: "",
    ],
)
async def test_any_wrong_key_is_the_same_401(engine: AsyncEngine, tamper: object) -> None:
    store = ApiKeyStore(engine)
    created = await store.create("acme", ["calendar:read"])
    with pytest.raises(Unauthenticated) as info:
        await store.authenticate(tamper(created.value))  # type: ignore[operator]
    assert str(info.value) == "missing or invalid API key"


async def test_revoked_key_stops_working_and_revoke_is_idempotent(engine: AsyncEngine) -> None:
    store = ApiKeyStore(engine)
    created = await store.create("acme", ["calendar:read"])
    first = await store.revoke(created.key.key_id)
    second = await store.revoke(created.key.key_id)
    assert first.revoked_at is not None
    assert second.revoked_at == first.revoked_at
    with pytest.raises(Unauthenticated):
        await store.authenticate(created.value)
    with pytest.raises(NotFound):
        await store.revoke("f" * 24)


async def test_keys_held_in_memory_are_checked_again_after_another_connection_wrote(
    engine: AsyncEngine, database_url: str
) -> None:
    # SQLite's watcher calls `external_write` after any other connection's commit: the CLI's
    # `api-keys revoke` beside `serve`, or, far more often, the server's own writes.
    cached = ApiKeyStore(engine, cache=True)
    cached.reset(usable=True)  # what the change feed does once it runs
    kept = await ApiKeyStore(engine).create("acme", ["calendar:read"])
    gone = await ApiKeyStore(engine).create("acme", ["calendar:read"])
    for key in (kept, gone):
        await cached.authenticate(key.value)
    cli = await create_engine(database_url)  # the CLI's own connection, which tells nobody
    try:
        await ApiKeyStore(cli).revoke(gone.key.key_id)
    finally:
        await cli.dispose()
    seen: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(statement)

    sa_event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        await cached.external_write()
        checked = list(seen)
        assert (await cached.authenticate(kept.value)).key_id == kept.key.key_id
        with pytest.raises(Unauthenticated):
            await cached.authenticate(gone.value)
    finally:
        sa_event.remove(engine.sync_engine, "before_cursor_execute", count)
    # One statement checked both keys; the key still valid stayed in memory (its request
    # read nothing), the revoked one was dropped and read again (and refused).
    assert len(checked) == 1 and "FROM api_keys" in checked[0], checked
    assert len(seen) == 2, seen


async def test_bad_tenant_or_scope_is_refused_and_nothing_is_stored(engine: AsyncEngine) -> None:
    store = ApiKeyStore(engine)
    with pytest.raises(InvalidInput, match="unknown scope calendar:admin"):
        await store.create("acme", ["calendar:admin"])
    with pytest.raises(InvalidInput, match="at least one scope"):
        await store.create("acme", [""])
    with pytest.raises(InvalidInput, match="tenant"):
        await store.create("acme corp; drop table", ["calendar:read"])
    assert await store.list() == []


# --- over HTTP -------------------------------------------------------------------------------


@requires_scope("calendar:read")
async def _echo(request: web.Request) -> web.Response:
    who = principal(request)
    return web.json_response({"tenant": who.tenant_id})


@pytest.fixture
async def http(
    engine: AsyncEngine,
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], ApiKeyStore]]:
    store = ApiKeyStore(engine)
    app = web.Application(middlewares=[problem_middleware])
    app[APIKEYS_KEY] = store
    app.router.add_get("/echo", _echo)
    async with TestClient(TestServer(app)) as client:
        yield client, store


async def test_http_requires_a_bearer_key(
    http: tuple[TestClient[web.Request, web.Application], ApiKeyStore],
) -> None:
    client, store = http
    response = await client.get("/echo")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.content_type == "application/problem+json"
    assert (await response.json())["code"] == "unauthenticated"

    reader = await store.create("acme", ["calendar:read"])
    response = await client.get("/echo", headers={"Authorization": f"Bearer {reader.value}"})
    assert response.status == 200
    assert await response.json() == {"tenant": "acme"}


async def test_http_wrong_scope_is_403_naming_the_scope(
    http: tuple[TestClient[web.Request, web.Application], ApiKeyStore],
) -> None:
    client, store = http
    writer = await store.create("acme", ["connections:write"])
    response = await client.get("/echo", headers={"Authorization": f"Bearer {writer.value}"})
    assert response.status == 403
    body = await response.json()
    assert body["code"] == "insufficient_scope"
    assert body["scope"] == "calendar:read"
    assert writer.value not in await response.text()


# --- CLI ----------------------------------------------------------------------------------------


async def test_cli_create_list_revoke(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    env = {"GATEWAY_DATABASE_URL": database_url}

    async def cli(*args: str) -> tuple[int, str, str]:
        r = await asyncio.to_thread(run_cli, "api-keys", *args, cwd=tmp_path, env=env)
        return r.returncode, r.stdout, r.stderr

    code, out, err = await cli(
        "create",
        "--tenant",
        "acme",
        "--scopes",
        "calendar:read,calendar:write",
        "--name",
        "sales agent",
    )
    assert code == 0, err
    value = out.strip()
    assert value.startswith("cgw_")
    assert "cannot be shown again" in err
    who = await ApiKeyStore(engine).authenticate(value)
    assert who.scopes == {"calendar:read", "calendar:write"}

    code, out, err = await cli("list")
    assert code == 0
    assert who.key_id in out
    assert "sales agent" in out
    assert value[29:] not in out

    code, out, err = await cli("revoke", who.key_id)
    assert code == 0
    assert "revoked" in out
    with pytest.raises(Unauthenticated):
        await ApiKeyStore(engine).authenticate(value)

    code, out, err = await cli("create", "--tenant", "acme", "--scopes", "calendar:admin")
    assert code == 2
    assert err.startswith("calendar-gateway: error: unknown scope calendar:admin")
