"""`keys rotate`, `keys rewrap`, `keys retire` and `keys status` end to end, on both databases,
through the real CLI, while a long-running vault (a serving process) keeps opening tokens."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import vault_data_keys
from tests.support.cli import run_cli, status_rows
from vault.cache import DekCache
from vault.envelope import SealContext
from vault.keyring import LocalKeyringProvider
from vault.service import Vault
from vault.store import SqlDekStore


async def _cli(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    result = await asyncio.to_thread(run_cli, *args, cwd=cwd, env=env)
    return result.returncode, result.stdout, result.stderr


async def test_rotate_rewrap_retire_end_to_end(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    keyring = tmp_path / "keyring.json"
    env = {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_KEK_URI": f"file:{keyring}",
        # The whole sequence runs in seconds; the grace has its own test below.
        "GATEWAY_KEK_RETIRE_GRACE_S": "0",
    }

    # A "serving process": its own provider, no DEK cache so every open unwraps, and no
    # reload rate limit so the test need not sleep past it.
    provider = await LocalKeyringProvider.open(keyring, reload_interval_s=0)
    server = Vault(provider, SqlDekStore(engine, vault_data_keys), DekCache(max_size=0))
    sealed: dict[SealContext, bytes] = {}
    for i in range(23):
        ctx = SealContext(tenant_id="acme", integration_id=f"int-{i:03}", purpose="refresh_token")
        await server.ensure_data_key(ctx.tenant_id, ctx.integration_id)
        sealed[ctx] = await server.seal(ctx, f"1//refresh-token-{i}".encode())

    code, out, err = await _cli("keys", "status", cwd=tmp_path, env=env)
    assert code == 0, err
    assert status_rows(out) == {1: ("primary", 23)}

    code, out, err = await _cli("keys", "rotate", cwd=tmp_path, env=env)
    assert code == 0, err
    assert "KEK version 2 is now primary" in out

    # Version 1 still wraps every data key: retiring it must be refused and change nothing.
    code, out, err = await _cli("keys", "retire", "1", cwd=tmp_path, env=env)
    assert code == 1
    assert err.startswith("calendar-gateway: error:")
    assert "23" in err
    code, out, err = await _cli("keys", "status", cwd=tmp_path, env=env)
    assert status_rows(out) == {1: ("active", 23), 2: ("primary", 0)}

    code, out, err = await _cli("keys", "rewrap", "--batch-size", "5", cwd=tmp_path, env=env)
    assert code == 0, err
    assert "rewrapped 23 data keys" in out
    async with engine.connect() as conn:
        versions = (
            await conn.execute(
                select(vault_data_keys.c.kek_version, func.count()).group_by(
                    vault_data_keys.c.kek_version
                )
            )
        ).all()
    assert [tuple(row) for row in versions] == [(2, 23)]

    # A second rewrap finds nothing to do.
    code, out, err = await _cli("keys", "rewrap", cwd=tmp_path, env=env)
    assert code == 0, err
    assert "rewrapped 0 data keys" in out

    code, out, err = await _cli("keys", "retire", "1", cwd=tmp_path, env=env)
    assert code == 0, err
    code, _, err = await _cli("keys", "retire", "2", cwd=tmp_path, env=env)
    assert code == 1, "the primary version must not be retirable"
    code, out, err = await _cli("keys", "status", cwd=tmp_path, env=env)
    assert status_rows(out) == {1: ("retired", 0), 2: ("primary", 23)}

    # The serving process loaded the keyring before the rotation and still opens every token.
    for ctx, blob in sealed.items():
        assert (
            await server.open(ctx, blob)
            == f"1//refresh-token-{int(ctx.integration_id[4:])}".encode()
        )
    await provider.close()


async def test_keys_commands_on_a_corrupt_keyring_fail_cleanly(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    keyring = tmp_path / "keyring.json"
    keyring.write_text('{"versions": [')
    keyring.chmod(0o600)
    env = {"GATEWAY_DATABASE_URL": database_url, "GATEWAY_KEK_URI": f"file:{keyring}"}
    for args in (("keys", "status"), ("keys", "rotate"), ("keys", "rewrap")):
        code, _, err = await _cli(*args, cwd=tmp_path, env=env)
        assert code == 1
        assert err.startswith("calendar-gateway: error:")
        assert "keyring.json" in err
        assert "Traceback" not in err
    assert keyring.read_text() == '{"versions": ['


async def test_retire_waits_until_running_gateways_have_seen_the_rotation(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    keyring = tmp_path / "keyring.json"
    env = {"GATEWAY_DATABASE_URL": database_url, "GATEWAY_KEK_URI": f"file:{keyring}"}
    code, _, err = await _cli("keys", "rotate", cwd=tmp_path, env=env)
    assert code == 0, err
    # No data key depends on version 1, but it was superseded a moment ago.
    code, _, err = await _cli("keys", "retire", "1", cwd=tmp_path, env=env)
    assert code == 1
    assert "superseded" in err
    assert "GATEWAY_KEK_RETIRE_GRACE_S" in err
    code, out, _ = await _cli("keys", "status", cwd=tmp_path, env=env)
    assert status_rows(out) == {1: ("active", 0), 2: ("primary", 0)}


async def test_a_running_gateway_wraps_new_keys_under_a_rotation_made_elsewhere(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    """New data keys must not keep going to the old primary after `keys rotate`."""
    keyring = tmp_path / "keyring.json"
    now = [0.0]
    provider = await LocalKeyringProvider.open(keyring, clock=lambda: now[0])
    server = Vault(provider, SqlDekStore(engine, vault_data_keys))
    env = {"GATEWAY_DATABASE_URL": database_url, "GATEWAY_KEK_URI": f"file:{keyring}"}
    code, _, err = await _cli("keys", "rotate", cwd=tmp_path, env=env)
    assert code == 0, err

    now[0] += 6  # past the keyring's 5 s reload interval
    info = await server.ensure_data_key("acme", "int-new")
    assert info.kek_version == 2
    await provider.close()


async def test_a_keyring_readable_by_others_is_refused_and_left_alone(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    keyring = tmp_path / "keyring.json"
    env = {"GATEWAY_DATABASE_URL": database_url, "GATEWAY_KEK_URI": f"file:{keyring}"}
    code, _, err = await _cli("keys", "status", cwd=tmp_path, env=env)
    assert code == 0, err  # first use generates it, 0600
    before = keyring.read_bytes()
    keyring.chmod(0o644)
    for args in (("keys", "status"), ("keys", "rotate"), ("serve", "--port", "0")):
        code, _, err = await _cli(*args, cwd=tmp_path, env=env)
        assert code == 1, args
        assert err.startswith("calendar-gateway: error:")
        assert "keyring.json" in err and "Traceback" not in err
    assert keyring.read_bytes() == before
