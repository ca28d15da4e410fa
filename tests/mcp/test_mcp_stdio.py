"""`calendar-gateway mcp --stdio`: an agent launches it as a subprocess and speaks MCP on its
stdin/stdout; the bridge forwards to a running gateway's /mcp with the API key."""

from __future__ import annotations

import os
import sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.support.cli import run_cli
from tests.support.mcp_client import text_of
from tests.support.stack import ALICE, Stack


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "CALENDAR_"))}
    return {**base, **extra}


async def test_an_agent_lists_connections_through_the_stdio_bridge(stack: Stack) -> None:
    connected = await stack.connect(ALICE, user_id="rep-9")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "gateway", "mcp", "--stdio"],
        env=_env(CALENDAR_GATEWAY_URL=stack.base_url, CALENDAR_GATEWAY_API_KEY=stack.api_key),
    )
    async with Client(params) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("list_calendar_connections", {"user_id": "rep-9"})
    assert "list_calendar_connections" in tools
    assert [c["id"] for c in text_of(result)["connections"]] == [connected["integration_id"]]


def test_the_bridge_refuses_to_start_without_url_or_key(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    missing_key = run_cli(
        "mcp", "--stdio", cwd=tmp_path, env={"CALENDAR_GATEWAY_URL": "http://127.0.0.1:9"}
    )
    assert missing_key.returncode == 2
    assert "CALENDAR_GATEWAY_API_KEY" in missing_key.stderr
    assert "Traceback" not in missing_key.stderr
    bad_url = run_cli(
        "mcp",
        "--stdio",
        cwd=tmp_path,
        env={"CALENDAR_GATEWAY_URL": "ftp://x", "CALENDAR_GATEWAY_API_KEY": "cgw_secretvalue"},
    )
    assert bad_url.returncode == 2
    assert "CALENDAR_GATEWAY_URL" in bad_url.stderr
    assert "cgw_secretvalue" not in bad_url.stderr + bad_url.stdout
