"""`calendar-gateway connect` (the README walkthrough's way to connect without a browser), run
as a user runs it, against a gateway and the emulator over real HTTP."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import run_cli
from tests.support.stack import RETURN_URL, Stack


@pytest.fixture
def backend() -> str:
    """The command is a client of the HTTP API: which database the gateway uses is not its
    concern (the API's own tests run on both)."""
    return "sqlite"


async def _connect(
    stack: Stack, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = (
        {"CALENDAR_GATEWAY_URL": stack.base_url, "CALENDAR_GATEWAY_API_KEY": stack.api_key}
        if env is None
        else env
    )
    argv = ["connect", "--user-id", "rep-1", "--return-url", RETURN_URL, *args]
    # The gateway answers in this event loop: the command runs in a thread meanwhile.
    return await asyncio.to_thread(run_cli, *argv, cwd=tmp_path, env=environment)


async def test_follow_connects_and_prints_the_integration_id(stack: Stack, tmp_path: Path) -> None:
    done = await _connect(stack, tmp_path, "--login-hint", "alice@example.com", "--follow")
    assert done.returncode == 0, done.stderr
    integration_id = done.stdout.strip()
    assert integration_id.startswith("int_")
    async with stack.http.get(
        stack.url(f"/v1/integrations/{integration_id}"), headers=stack.auth()
    ) as response:
        assert response.status == 200
        assert (await response.json())["status"] == "active"
    assert stack.api_key not in done.stdout + done.stderr


async def test_a_refused_consent_exits_1_with_the_flows_error(stack: Stack, tmp_path: Path) -> None:
    done = await _connect(stack, tmp_path, "--login-hint", "bob@example.com", "--follow")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "status=error error=access_denied" in done.stderr


async def test_without_follow_it_prints_the_connect_url(stack: Stack, tmp_path: Path) -> None:
    done = await _connect(stack, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{stack.google_url}/o/oauth2/v2/auth?")
    assert "open this URL" in done.stderr


async def test_the_gateway_and_key_come_from_the_environment(stack: Stack, tmp_path: Path) -> None:
    done = await _connect(stack, tmp_path, env={})
    assert done.returncode == 1
    assert "CALENDAR_GATEWAY_URL must be the gateway's http(s) base URL" in done.stderr
    done = await _connect(stack, tmp_path, env={"CALENDAR_GATEWAY_URL": stack.base_url})
    assert done.returncode == 1
    assert "CALENDAR_GATEWAY_API_KEY must hold an API key" in done.stderr
    done = await _connect(
        stack,
        tmp_path,
        env={"CALENDAR_GATEWAY_URL": stack.base_url, "CALENDAR_GATEWAY_API_KEY": "cgw_wrong"},
    )
    assert done.returncode == 1
    assert "answered 401 (unauthenticated)" in done.stderr
