"""Caches across real processes: a key revoked anywhere is refused by every `serve` within a
second, on PostgreSQL (NOTIFY) and on SQLite beside the CLI (PRAGMA data_version); a second
`serve` on one SQLite file is refused at start."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from gateway.apikeys import SCOPES, ApiKeyStore
from tests.support.processes import ServeProcess, gateway_env, serve_process, until
from tests.support.stack import Stack, free_port

# The promise: a revoked key stops everywhere within a second.
REVOKED_WITHIN_S = 1.0


async def status_of(stack: Stack, proc: ServeProcess, key: str) -> int:
    async with stack.http.get(
        proc.url("/v1/integrations"), headers={"Authorization": f"Bearer {key}"}
    ) as response:
        return response.status


def refused(stack: Stack, proc: ServeProcess, key: str):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return await status_of(stack, proc, key) == 401

    return check


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_key_revoked_by_another_process_is_refused_by_both_serves_within_a_second(
    stack: Stack, tmp_path: Path
) -> None:
    keys = ApiKeyStore(stack.engine)
    made = await keys.create("acme", SCOPES, name="two-processes")
    async with (
        serve_process(stack, tmp_path, "a") as a,
        serve_process(stack, tmp_path, "b") as b,
    ):
        # Both remember the key (a warm request reads no database).
        for proc in (a, b):
            assert await status_of(stack, proc, made.value) == 200
            assert await status_of(stack, proc, made.value) == 200
        # Revoked by a third process on the same database (as `api-keys revoke` does).
        await keys.revoke(made.key.key_id)
        for proc in (a, b):
            await until(refused(stack, proc, made.value), timeout_s=REVOKED_WITHIN_S)


async def _run_cli(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # Not a speed bound: a command that never ends (a second serve that was not refused)
        # must fail the test instead of hanging it.
        out, _ = await asyncio.wait_for(child.communicate(), timeout=120)
    except TimeoutError:
        child.kill()
        await child.wait()
        raise AssertionError(f"`calendar-gateway {' '.join(args)}` did not end") from None
    assert child.returncode is not None
    return child.returncode, out.decode("utf-8", errors="replace")


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_key_revoked_with_the_cli_beside_serve_is_refused_within_a_second(
    stack: Stack, tmp_path: Path
) -> None:
    made = await ApiKeyStore(stack.engine).create("acme", SCOPES, name="cli-revoked")
    async with serve_process(stack, tmp_path, "serve") as proc:
        assert await status_of(stack, proc, made.value) == 200
        assert await status_of(stack, proc, made.value) == 200  # now from memory
        code, output = await _run_cli(
            gateway_env(stack, lease_s=60.0), tmp_path, "api-keys", "revoke", made.key.key_id
        )
        assert code == 0, output
        await until(refused(stack, proc, made.value), timeout_s=REVOKED_WITHIN_S)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_second_serve_on_one_sqlite_file_is_refused_with_a_clear_error(
    stack: Stack, tmp_path: Path
) -> None:
    async with serve_process(stack, tmp_path, "first") as first:
        env = gateway_env(stack, lease_s=60.0)
        port = str(free_port())
        code, output = await _run_cli(env, tmp_path, "serve", "--host", "127.0.0.1", "--port", port)
        assert code == 1
        lines = output.strip().splitlines()
        assert lines[-1].startswith("calendar-gateway: error: another `calendar-gateway serve`")
        assert "already running on" in lines[-1] and "PostgreSQL" in lines[-1]
        # The first one serves on, untouched.
        async with stack.http.get(first.url("/healthz")) as response:
            assert response.status == 200
