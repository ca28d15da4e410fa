"""/readyz: ready only when the database answers at the current schema and the key provider
can wrap and unwrap."""

from __future__ import annotations

from sqlalchemy import text

from tests.support.stack import Stack


async def test_a_healthy_gateway_is_ready(stack: Stack) -> None:
    async with stack.http.get(stack.url("/readyz")) as r:
        assert r.status == 200
        body = await r.json()
    assert body == {"status": "ready", "checks": {"database": "ok", "key_provider": "ok"}}


async def test_a_database_behind_the_code_is_not_ready(stack: Stack) -> None:
    """E.g. a backup from before the last upgrade was restored under running processes."""
    async with stack.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0004'"))
    async with stack.http.get(stack.url("/readyz")) as r:
        assert r.status == 503
        body = await r.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"].startswith("schema at 0004, code needs ")
    assert body["checks"]["key_provider"] == "ok"
